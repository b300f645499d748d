"""The store under real processes: kill -9 and resume, concurrent identical runs, a new test
split beside an old one. Slow (real `bench run` processes on the tiny preset)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest_data import make_adni

pytestmark = pytest.mark.slow
TIMING = {"fit_s", "samples_per_s"}


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bench.cli import app; app()", *args]


def run_args(out: Path, prior: str = "pixelcnn") -> list[str]:
    return ["run", "--prior", prior, "--preset", "tiny", "--out", str(out), "--threads", "1",
            "--checkpoint-every", "0"]


def prior_records(out: Path) -> list[dict]:
    recs = [json.loads(p.read_text()) for p in out.glob("runs/*/record.json")]
    return [r for r in recs if r["kind"] == "prior"]


def scores(record: dict) -> dict:
    return {k: v for k, v in record["scores"].items() if k not in TIMING}


def test_kill_9_during_training_resumes_to_the_same_scores(tmp_path):
    done = subprocess.run(bench_cmd(*run_args(tmp_path / "plain")), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(bench_cmd(*run_args(out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob(".partial/fits--*/checkpoint-*.pt")):  # inside the prior's fit
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before a checkpoint of the fit was seen"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert prior_records(out) == []  # nothing half-written is taken as finished
    again = subprocess.run(bench_cmd(*run_args(out)), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resumed at step" in again.stderr
    assert not list(out.glob(".partial/*/checkpoint-*.pt"))  # removed on commit
    [resumed], [plain] = prior_records(out), prior_records(tmp_path / "plain")
    assert scores(resumed) == scores(plain)
    listed = subprocess.run(bench_cmd("compare", "--out", str(out)), capture_output=True, text=True)
    assert listed.returncode == 0 and ".staging" not in listed.stdout


def test_three_identical_runs_train_one_backbone_and_write_one_record(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen(bench_cmd(*run_args(out, "uniform")), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in results]
    stderr = " ".join(" ".join(e.split()) for _, e in results)
    assert stderr.count("backbone: trained") == 1
    assert len(prior_records(out)) == 1
    assert len(list((out / "backbones").iterdir())) == 1


def test_a_new_test_split_gets_its_own_export_and_leaves_old_records_alone(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app
    first = make_adni(tmp_path / "a", train=6, test=5, slices=2)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    for f in sorted((second / "test" / "AD").iterdir())[:2]:  # one AD test subject fewer
        f.unlink()
    out, runner = tmp_path / "out", CliRunner()
    runs = []
    for root in (first, second):
        result = runner.invoke(app, ["run", "--prior", "uniform", "--preset", "tiny", "--dataset",
                                     f"adni:{root}", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs.append(prior_records(out))
    old = runs[0][0]
    new = [r for r in runs[1] if r["export_hash"] != old["export_hash"]]
    assert len(runs[1]) == 2 and len(new) == 1  # a new export, a new record
    assert len(list((out / "exports").iterdir())) == 2
    assert [r for r in runs[1] if r["export_hash"] == old["export_hash"]] == [old]  # untouched
    assert new[0]["data"]["fingerprint"] != old["data"]["fingerprint"]
