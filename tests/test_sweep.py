"""`bench sweep`: real cells under submitit's local executor on the tiny preset (slow), its Slurm
path with submitit's own SlurmExecutor faked only where it would call sbatch, its throttle, and
every validation branch of its flags and sweep file."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from submitit import SlurmExecutor
from submitit.core.utils import FailedJobError, JobPaths, UncompletedJobError
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import BenchError
from bench.sweep import Cell, SweepConfig, load_sweep_file
from bench.sweep_jobs import CellRun, failure_reason, run_jobs, watch
from bench.run import RunConfig
from tests.conftest_plugins import PLUGINS, fake_install
from tests.test_store_runs import bench_cmd, prior_records, scores

SWEEP = ["sweep", "--priors", "uniform,pixelcnn", "--seeds", "0,1", "--preset", "tiny",
         "--executor", "local", "--jobs", "2", "--threads", "1"]
TIMING_COLUMNS = ["samples/s", "samples/s ci95", "fit s", "fit s ci95"]


def sweep(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(bench_cmd(*args, "--out", str(out)), capture_output=True, text=True,
                          timeout=600, env=env)


def one_line(text: str) -> str:
    return " ".join(text.split())


def table(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "comparison.csv").drop(columns=TIMING_COLUMNS)
    return frame.sort_values("prior", ignore_index=True)


def by_cell(out: Path) -> dict[tuple[str, int], dict]:
    return {(r["prior"], r["seed"]): scores(r) for r in prior_records(out)}


@pytest.mark.slow
def test_a_sweep_equals_its_runs_one_by_one_and_a_second_sweep_runs_nothing(tmp_path):
    out = tmp_path / "sweep"
    done = sweep(out, *SWEEP)
    assert done.returncode == 0, done.stderr
    assert "sweep: 4 cells: 4 done, 0 skipped (finished before), 0 failed" in done.stderr
    assert len(prior_records(out)) == 4
    assert len(list((out / "backbones").iterdir())) == 1
    logs = " ".join(p.read_text() for p in out.glob("sweeps/*/*_log.err"))
    assert one_line(done.stderr + logs).count("backbone: trained") == 1  # by the sweep, once
    assert one_line(logs).count("backbone: cached") == 4  # found by every cell
    runner, one_by_one = CliRunner(), tmp_path / "runs"
    for prior in ("uniform", "pixelcnn"):
        for seed in ("0", "1"):
            result = runner.invoke(app, ["run", "--prior", prior, "--seed", seed, "--preset",
                                         "tiny", "--out", str(one_by_one), "--threads", "1"])
            assert result.exit_code == 0, result.output
    assert by_cell(out) == by_cell(one_by_one)
    assert runner.invoke(app, ["compare", "--out", str(one_by_one)]).exit_code == 0
    pd.testing.assert_frame_equal(table(out), table(one_by_one))
    again = sweep(out, *SWEEP)
    assert again.returncode == 0, again.stderr
    assert "sweep: all 4 cells had finished before; nothing to run" in again.stderr
    assert len(list((out / "sweeps").iterdir())) == 1  # no job was submitted
    pd.testing.assert_frame_equal(table(out), table(one_by_one))  # written again, the same


@pytest.mark.slow
def test_a_killed_cell_fails_with_its_log_the_others_finish_and_a_rerun_retries_it(
        tmp_path, monkeypatch):
    fake_install(tmp_path / "site", monkeypatch,
                 {"kills-once": "bench_broken_priors:KillsItsProcessOnce"}, dist="killer")
    env = dict(os.environ, KILL_ONCE_MARKER=str(tmp_path / "killed"),
               PYTHONPATH=os.pathsep.join([str(PLUGINS), str(tmp_path / "site"), *sys.path]))
    out = tmp_path / "out"
    args = ["sweep", "--priors", "uniform,kills-once", "--preset", "tiny", "--jobs", "2",
            "--threads", "1"]
    failed = sweep(out, *args, env=env)
    assert failed.returncode == 2, failed.stderr
    lines = [ln for ln in failed.stderr.splitlines() if ln.startswith("failed: ")]
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("failed: kills-once · seed 0 · mni · tiny: ended without a "
                               "result (killed, out of memory or out of time); log: ")
    log = Path(lines[0].split("; log: ")[1].split(" (stdout: ")[0])
    assert log.is_file() and log.parent.parent == out / "sweeps"
    assert "error: 1 of 2 cells failed" in failed.stderr
    assert [r["prior"] for r in prior_records(out)] == ["uniform"]
    assert json.loads((out / "comparison.json").read_text())  # the tables of what finished
    retried = sweep(out, *args, env=env)
    assert retried.returncode == 0, retried.stderr
    assert "sweep: 2 cells: 1 done, 1 skipped (finished before), 0 failed" in retried.stderr
    assert sorted(r["prior"] for r in prior_records(out)) == ["kills-once", "uniform"]


# --- Slurm, without Slurm ---------------------------------------------------------------------


class InlineJob:
    """A job that ran when it was submitted, in this process: what the fake sbatch returns."""

    def __init__(self, folder: Path, submission) -> None:
        self.paths, self.state = JobPaths(folder, job_id="inline", task_id=0), "COMPLETED"
        try:
            submission.result()
            self.error = None
        except Exception as e:  # noqa: BLE001 - the sweep reports it
            self.error = e

    def done(self) -> bool:
        return True

    def exception(self) -> BaseException | None:
        return self.error

    def cancel(self, check: bool = True) -> None:
        pass


@pytest.fixture
def fake_slurm(monkeypatch) -> list[dict]:
    """submitit's SlurmExecutor as on a login node (srun found), its sbatch call replaced: each
    submission records the executor's parameters and sbatch file, then runs inline."""
    seen: list[dict] = []

    def submit(self, submissions):
        seen.append({"parameters": dict(self.parameters), "folder": Path(self.folder),
                     "sbatch": self._make_submission_file_text("CMD", "uid").splitlines()})
        return [InlineJob(self.folder, s) for s in submissions]

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(SlurmExecutor, "_internal_process_submissions", submit)
    return seen


def test_the_slurm_executor_gets_the_flags_and_the_sweep_file(tmp_path, fake_slurm):
    out, runner = tmp_path / "out", CliRunner()
    result = runner.invoke(app, ["sweep", "--priors", "uniform", "--preset", "tiny", "--executor",
                                 "slurm", "--partition", "gpu", "--gpus-per-job", "2",
                                 "--timeout-min", "240", "--account", "lab", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [job] = fake_slurm
    assert job["folder"].parent == out.resolve() / "sweeps"
    assert {k: job["parameters"][k] for k in ("partition", "account", "gpus_per_node", "time",
                                              "job_name")} == {
        "partition": "gpu", "account": "lab", "gpus_per_node": 2, "time": 240,
        "job_name": "bench-uniform-s0"}
    for line in ("--partition=gpu", "--account=lab", "--gpus-per-node=2", "--time=240",
                 f"--output={job['folder']}/%j_0_log.out"):
        assert f"#SBATCH {line}" in job["sbatch"]
    file = tmp_path / "sweep.toml"
    file.write_text(f'priors = ["uniform"]\nseeds = [1]\npreset = ["tiny"]\nexecutor = "slurm"\n'
                    f'partition = "long"\naccount = "other"\ngpus_per_job = 0\ntimeout_min = 30\n'
                    f'out = "{out}"\n')
    result = runner.invoke(app, ["sweep", "--sweep-file", str(file), "--account", "mine"])
    assert result.exit_code == 0, result.output
    lines = fake_slurm[1]["sbatch"]
    for line in ("--partition=long", "--account=mine", "--gpus-per-node=0", "--time=30",
                 "--job-name=bench-uniform-s1"):
        assert f"#SBATCH {line}" in lines  # the flag wins over the file's account
    assert len(prior_records(out)) == 2


def test_slurm_partition_and_account_left_unset_are_not_in_the_sbatch_file(tmp_path, fake_slurm):
    from bench.sweep_jobs import make_executor
    executor = make_executor(SweepConfig(priors=("uniform",), executor="slurm", timeout_min=5),
                             tmp_path)
    executor.submit(len, "abc")
    assert not [ln for ln in fake_slurm[0]["sbatch"] if "--partition" in ln or "--account" in ln]


# --- the throttle and failure reasons ---------------------------------------------------------


class SlowJob:
    """Ends at its `polls`-th look."""

    def __init__(self, polls: int) -> None:
        self.polls, self.ended, self.state = polls, False, "RUNNING"
        self.paths = JobPaths("/nowhere", job_id="1", task_id=0)

    def done(self) -> bool:
        self.polls -= 1
        self.ended = self.polls <= 0
        return self.ended

    def exception(self) -> None:
        return None


def test_run_jobs_keeps_at_most_jobs_cells_in_flight():
    runs = [CellRun(Cell(RunConfig(seed=s)), "pending") for s in range(6)]
    runs[2].state = "skipped"
    jobs: list[SlowJob] = []
    in_flight: list[int] = []

    def submit(cell):
        jobs.append(SlowJob(polls=1 + cell.run.seed % 3))
        in_flight.append(sum(not j.ended for j in jobs))
        return jobs[-1]

    run_jobs(runs, submit, jobs=2, on_change=lambda: None, poll_s=0)
    assert max(in_flight) == 2 and len(jobs) == 5
    assert [r.state for r in runs] == ["done", "done", "skipped", "done", "done", "done"]


def test_a_queued_slurm_job_is_pending_until_it_runs():
    run = CellRun(Cell(RunConfig()), "pending", job=SlowJob(polls=3), started=1.0)
    run.job.state = "PENDING"
    assert not watch(run) and run.state == "pending" and run.wall_s is None
    run.job.state = "RUNNING"
    assert not watch(run) and run.state == "running" and run.wall_s is not None
    assert watch(run) and run.state == "done"


def test_failure_reason_names_the_exception_or_the_death():
    trace = ("Job (task=0) failed during processing with trace:\n----\nTraceback (most recent "
             "call last):\n  File \"x.py\", line 1\nbench.errors.BenchError: unknown prior 'x'\n"
             "----\nYou can check full logs with 'job.stderr(0)'")
    assert failure_reason(FailedJobError(trace)) == "raised bench.errors.BenchError: unknown prior 'x'"
    assert failure_reason(UncompletedJobError("Job 1 has not produced any output")) == \
        "ended without a result (killed, out of memory or out of time)"


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--executor", "pbs"], "unknown executor 'pbs'; available: local, slurm"),
    (["--executor", "slurm"], "--executor slurm needs --timeout-min MINUTES"),
    (["--executor", "slurm", "--timeout-min", "5"], "--executor slurm: submitit cannot use it "
                                                    "here (Could not detect \"srun\""),
    (["--jobs", "0"], "jobs must be >= 1, got 0"),
    (["--seeds", "0,x"], "--seeds must be comma-separated int values like 0,1,2, got '0,x'"),
    (["--seeds", "1,1"], "seeds must list one or more distinct values, got [1, 1]"),
    (["--seeds", "-1"], "seeds must be >= 0, got -1"),
    (["--gpus-per-job", "-1"], "gpus_per_job must be >= 0, got -1"),
    (["--priors", "pixelcn"], "unknown prior 'pixelcn'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_flags_are_one_line_errors_before_any_work(tmp_path, args, message):
    base = ["sweep", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, base + (["--priors", "uniform"] if "--priors" not in args
                                             else []) + args)
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert message in errors[0], errors[0]
    assert not (tmp_path / "out" / "backbones").exists()
    assert not (tmp_path / "out" / "sweeps").exists()


@pytest.mark.parametrize("text, message", [
    ('partiton = "gpu"', "unknown key 'partiton' (did you mean 'partition'?); valid: priors, "),
    ('jobs = "two"', "jobs must be int, got 'two'"),
    ('priors = "uniform"', "priors must be a list, got 'uniform'"),
    ("seeds = [0, 1.5]", r"seeds must be int, got 1.5"),
    ("out = 3", "out must be str, got 3"),
    ("priors = [", "not valid TOML"),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, text, message):
    file = tmp_path / "sweep.toml"
    file.write_text(text + "\n")
    with pytest.raises(BenchError, match=f"^sweep file {re.escape(str(file))}: .*"
                       f"{re.escape(message)}"):
        load_sweep_file(file)


def test_a_missing_sweep_file_and_an_empty_prior_list_are_errors(tmp_path):
    with pytest.raises(BenchError, match="sweep file .*nope.toml not found"):
        load_sweep_file(tmp_path / "nope.toml")
    with pytest.raises(BenchError, match=r"no priors to sweep; give --priors NAME,NAME"):
        SweepConfig()
    result = CliRunner().invoke(app, ["sweep", "--sweep-file", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "not found" in result.stderr


def test_a_sweep_file_gives_every_key_and_flags_override_it(tmp_path):
    from bench.cli_sweep import sweep_config
    file = tmp_path / "sweep.toml"
    file.write_text('priors = ["uniform", "pixelcnn"]\nseeds = [0, 2]\ndataset = ["mni"]\n'
                    'preset = ["tiny", "quick"]\njobs = 3\nout = "elsewhere"\ndevice = "cpu"\n'
                    'threads = 1\n')
    cfg = sweep_config({"jobs": 4, "seeds": None}, file)
    assert cfg == SweepConfig(priors=("uniform", "pixelcnn"), seeds=(0, 2), dataset=("mni",),
                              preset=("tiny", "quick"), jobs=4, out=Path("elsewhere"),
                              device="cpu", threads=1)
