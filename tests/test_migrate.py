"""`bench migrate`: a run folder of the layout before `fits/` (weights inside the run, scored
under an older real side) becomes a fit the next `bench run` re-scores without training."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import records
from bench.cli import app
from bench.migrate import SUPERSEDED
from bench.store import Artefact, Store, load_tensors

runner = CliRunner()
OLD_SIDE = "decoded test codes"  # the definition before subject halves


def bench(*args: str):
    return runner.invoke(app, list(args))


def prior_runs(out: Path) -> dict[str, dict]:
    recs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/record.json")]
    return {r["prior"]: r for r in recs if r["kind"] == "prior"}


def make_legacy(out: Path, record: dict, precision: str | None = None) -> str:
    """Rewrite a current run of a prior as the previous version stored it: its fit's weights
    under prior/ beside the samples, no fit artefact, the old real side in record and key (whose
    config named the training precision as it resolved: `precision`)."""
    fit_dir = out / record["artefacts"]["fit"]
    run_dir = Path(record["path"]) if "path" in record else out / "runs" / record["run_id"]
    tensors = records.read_tensors(run_dir)
    tensors |= {f"prior/{k}": v for k, v in load_tensors(fit_dir / "weights.safetensors").items()}
    old = dict(record, real_side=OLD_SIDE, artefacts={k: v for k, v in record["artefacts"].items()
                                                      if k != "fit"})
    old.pop("path", None)
    deps = {"old layout": record["run_id"]}
    if precision:
        deps["config"] = dict(record["config"], precision=precision)
    art = Artefact.of("runs", deps, prefix=f"{record['prior']}-", digits=12)
    Store(out).get_or_build(art, records.writer(old | {"run_id": art.name}, tensors), lambda d: d)
    shutil.rmtree(fit_dir)
    shutil.rmtree(run_dir)
    return art.name


def add_against(out: Path, record: dict, run_name: str) -> str:
    """A current `bench score` record of the run `run_name` (its samples against other data)."""
    rec = {k: v for k, v in record.items() if k != "path"} | {"against": {"run": f"runs/{run_name}"}}
    art = Artefact.of("runs", {"against": run_name}, prefix=f"{record['prior']}-against-", digits=12)
    Store(out).get_or_build(art, records.writer(rec | {"run_id": art.name}), lambda d: d)
    return art.name


@pytest.mark.slow
def test_an_old_run_is_rescored_from_its_weights_without_refitting(tmp_path, monkeypatch):
    out = tmp_path / "results"
    args = ("run", "--prior", "pixelcnn", "--preset", "tiny", "--out", str(out))
    first = bench(*args)
    assert first.exit_code == 0, first.output
    assert bench("run", "--prior", "uniform", "--preset", "tiny", "--out", str(out)).exit_code == 0
    record, uniform = prior_runs(out)["pixelcnn"], prior_runs(out)["uniform"]
    fit_name = Path(record["artefacts"]["fit"]).name
    precision = json.loads((out / record["artefacts"]["fit"] / "MANIFEST.json").read_text()
                           )["deps"]["config"]["precision"]
    legacy = make_legacy(out, record, precision)
    make_legacy(out, uniform)  # no weights at all
    against = add_against(out, record, legacy)
    assert not list((out / "fits").iterdir())

    done = bench("migrate", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert "2 fit(s) written" in done.stdout
    assert (out / "fits" / fit_name).is_dir()
    # the score record of a moved run moves with it, though it is of the current definition
    assert (out / SUPERSEDED / "runs" / against / "record.json").is_file()
    assert list((out / SUPERSEDED / "runs").glob("pixelcnn-*/record.json"))
    assert "pixelcnn" not in prior_runs(out)  # the old row left the tables
    again = bench("migrate", "--out", str(out))  # idempotent
    assert again.exit_code == 0 and "0 fit(s) written" in again.stdout

    import priors.pixelcnn as pixelcnn

    def no_training(*_, **__):
        raise AssertionError("the migrated fit was trained again")

    monkeypatch.setattr(pixelcnn.PixelCNNPrior, "fit", no_training)
    rescored = bench(*args)
    assert rescored.exit_code == 0, rescored.output
    assert "fitted prior found" in rescored.stderr
    new = prior_runs(out)["pixelcnn"]
    assert new["artefacts"]["fit"] == record["artefacts"]["fit"]  # the same key as a fresh fit
    assert new["scores"]["bits_per_code"] == record["scores"]["bits_per_code"]
    assert new["scores"]["fd"] == pytest.approx(record["scores"]["fd"], rel=1e-6)
    assert new["fit"] == record["fit"]


def test_migrate_refuses_a_missing_folder(tmp_path):
    result = bench("migrate", "--out", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "not a results folder" in result.stderr


def test_the_fit_is_keyed_by_the_precision_the_old_run_resolved(tmp_path):
    """A run trained elsewhere (bf16 on a GPU, say) keeps that precision in its fit's key; this
    machine's resolution of `auto` does not decide it."""
    out = tmp_path / "results"
    assert bench("run", "--prior", "pixelcnn", "--preset", "tiny", "--out", str(out)).exit_code == 0
    record = prior_runs(out)["pixelcnn"]
    here = json.loads((out / record["artefacts"]["fit"] / "MANIFEST.json").read_text()
                      )["deps"]["config"]["precision"]
    other = "bf16" if here == "fp32" else "fp32"
    make_legacy(out, record, other)
    assert bench("migrate", "--out", str(out)).exit_code == 0
    [fit] = (out / "fits").iterdir()
    deps = json.loads((fit / "MANIFEST.json").read_text())["deps"]
    assert deps["config"]["precision"] == other and fit.name != Path(record["artefacts"]["fit"]).name
