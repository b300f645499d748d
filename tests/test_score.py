"""`bench score`: a finished tiny run's samples re-scored against another adni-layout folder,
with the run's own backbone, prior and extractor; every refusal is one line."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench import records, tables
from bench.cli import app
from bench.errors import ArtefactError, BenchError
from bench.extractors import stored_extractor
from bench.rescore import (MEMORISATION_NOTE, ScoreConfig, data_config, open_run, run_backbone,
                           stored_prior)
from bench.run import REFERENCE
from bench.sampling import bits_per_code_on, code_set
from bench.data import DataConfig, fingerprint_of
from bench.store import Store, file_sha256
from tests.conftest_data import make_adni
from tests.test_cli import assert_user_error
from vqvae import load_export

runner = CliRunner()


def bench(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict[str, Path]:
    """A finished tiny unigram run on site A, scored once against site B."""
    tmp = tmp_path_factory.mktemp("score")
    site_a = make_adni(tmp / "A", train=4, test=4, slices=2)
    site_b = make_adni(tmp / "B", train=2, test=3, slices=3)  # other subjects and slice counts
    out = tmp / "results"
    result = bench("run", "--prior", "unigram", "--preset", "tiny", "--dataset", f"adni:{site_a}",
                   "--out", out)
    assert result.exit_code == 0, result.output
    [run] = (out / "runs").glob("unigram-*")
    result = bench("score", run, "--against", f"adni:{site_b}")
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "out": out, "run": run, "A": site_a, "B": site_b}


def record_of(folder: Path) -> dict:
    return json.loads((folder / "record.json").read_text())


def test_score_writes_a_record_and_a_reference_row(scored):
    run = record_of(scored["run"])
    [mine] = (scored["out"] / "runs").glob("unigram-against-*")
    [ref] = (scored["out"] / "runs").glob("reference-against-*")
    mine, ref = record_of(mine), record_of(ref)
    assert mine["kind"] == "prior" and ref["kind"] == "reference" and ref["prior"] == REFERENCE
    for r in (mine, ref):
        assert r["data"]["name"] == "B" and r["against"]["data"] == run["data"]
        assert r["against"]["run_id"] == run["run_id"]
        assert r["backbone_hash"] == run["backbone_hash"]
        assert r["extractor"] == run["extractor"]  # the run's own features, not retrained
        assert r["against"]["memorisation"] == MEMORISATION_NOTE
    assert mine["scores"]["memorisation"] == run["scores"]["memorisation"]  # the run's own
    assert "memorisation" not in ref["scores"]
    assert ref["scores"]["recon_ssim"] > 0 and mine["scores"]["bits_per_code"] > 0
    n = int(mine["scores"]["n_samples"])
    assert n == ref["scores"]["n_samples"] == 8  # 18 test images of B: 9 per side, capped at 8
    stored = records.read_tensors(scored["run"])["samples/codes"]
    again = records.read_tensors(scored["out"] / "runs" / mine["run_id"])["samples/codes"]
    assert torch.equal(again, stored[:n])  # the run's samples, not new ones


def test_compare_shows_the_rescored_table_under_the_other_dataset(scored):
    result = bench("compare", "--out", scored["out"])
    assert result.exit_code == 0, result.output
    rows = json.loads((scored["out"] / "comparison.json").read_text())
    other = [r for r in rows if r["dataset"] == "B"]
    assert {r["prior"] for r in other} == {"unigram", REFERENCE}
    assert {r["samples trained on"] for r in other} == {"A"}
    assert {r["samples trained on"] for r in rows if r["dataset"] == "A"} == {""}
    run_id = record_of(scored["run"])["run_id"]
    md = (scored["out"] / "comparison.md").read_text()
    assert f"### B test split, samples of run {run_id} trained on A (memorised: the run's own" in md
    assert md.index("### A ·") < md.index("### B test split")  # the runs' own tables first


def test_the_stored_prior_gives_the_runs_own_bits_per_code(scored):
    run = open_run(scored["run"])
    export = load_export(run.artefact("export"), backbone=run.record["backbone_hash"])
    prior = stored_prior(run, records.read_tensors(run.directory), export, 0, torch.device("cpu"))
    bits = bits_per_code_on(prior, code_set(export, "test", False))
    assert bits == pytest.approx(run.record["scores"]["bits_per_code"], rel=1e-12)


def test_a_second_call_says_finished_and_force_rebuilds(scored):
    [folder] = (scored["out"] / "runs").glob("unigram-against-*")
    created = json.loads((folder / "MANIFEST.json").read_text())["created"]
    again = bench("score", scored["run"], "--against", f"adni:{scored['B']}")
    assert again.exit_code == 0, again.output
    assert "finished record found" in " ".join(again.stderr.split())
    assert json.loads((folder / "MANIFEST.json").read_text())["created"] == created
    forced = bench("score", scored["run"], "--against", f"adni:{scored['B']}", "--force")
    assert forced.exit_code == 0, forced.output
    assert "finished record found" not in forced.stderr
    assert "codes: exported" in forced.stderr  # rebuilt, not read back
    assert record_of(folder)["against"]["run_id"] == record_of(scored["run"])["run_id"]


def test_an_unknown_extractor_id_is_refused(scored):
    with pytest.raises(ArtefactError, match="mri feature extractor mri-0000 that scored the run "
                                            "is not in"):
        stored_extractor("mri", "mri-0000", store=Store(scored["out"]), device=torch.device("cpu"))


@pytest.fixture
def site(scored, tmp_path):
    """A fresh adni-layout folder to break."""
    return make_adni(tmp_path / "C", train=2, test=2, slices=2)


def test_another_resolution_is_refused_before_any_work(scored):
    exports = len(list((scored["out"] / "exports").iterdir()))
    result = bench("score", scored["run"], "--against", f"adni:{scored['B']}", "--preset", "quick",
                   "--force")
    assert_user_error(result, "at 64 px (preset quick)", "samples are 32 px (preset tiny)")
    assert len(list((scored["out"] / "exports").iterdir())) == exports


def test_a_dataset_without_a_test_split_is_refused(scored, site):
    shutil.rmtree(site / "test")
    assert_user_error(bench("score", scored["run"], "--against", f"adni:{site}"),
                      "missing test/AD, test/NC")


def test_too_few_test_images_for_the_samples_are_refused(scored, site):
    for f in sorted((site / "test").rglob("*.jpeg"))[3:]:
        f.unlink()  # 3 test images left: fewer than 4 on each side
    assert_user_error(bench("score", scored["run"], "--against", f"adni:{site}"),
                      "scoring needs at least 4 samples", "has 3 test images")


def test_the_runs_own_dataset_is_refused_however_spelled_or_copied(scored):
    spelled = f"adni:{scored['A']}/../{scored['A'].name}/"
    assert_user_error(bench("score", scored["run"], "--against", spelled),
                      "is the dataset run", "was trained and scored on")
    copy = shutil.copytree(scored["A"], scored["tmp"] / "copy-of-A", copy_function=shutil.copy)
    assert_user_error(bench("score", scored["run"], "--against", f"adni:{copy}"),
                      "is the dataset run", "was trained and scored on")


def test_a_run_recorded_before_content_fingerprints_still_refuses_its_own_data(scored):
    """Older records hold the source files' key as the data fingerprint."""
    old = shutil.copytree(scored["out"], scored["tmp"] / "old-results")
    run = old / "runs" / scored["run"].name
    record = record_of(run)
    record["data"]["fingerprint"] = fingerprint_of(f"adni:{scored['A']}",
                                                   DataConfig(resolution=32))[0]
    (run / "record.json").write_text(json.dumps(record))
    manifest = json.loads((run / "MANIFEST.json").read_text())
    manifest["files"]["record.json"] = file_sha256(run / "record.json")
    (run / "MANIFEST.json").write_text(json.dumps(manifest))
    assert_user_error(bench("score", run, "--against", f"adni:{scored['A']}"),
                      "is the dataset run", "was trained and scored on")


@pytest.mark.parametrize("folder, message", [
    (lambda s: s["tmp"], "is not a run folder"),
    (lambda s: s["out"] / "runs" / "unfinished", "is not a finished run (no MANIFEST.json)"),
    (lambda s: next((s["out"] / "runs").glob("reference-*")), "not a run of a prior"),
    (lambda s: next((s["out"] / "runs").glob("unigram-against-*")), "already re-scored"),
])
def test_a_folder_that_is_not_a_finished_run_is_refused(scored, folder, message):
    path = folder(scored)
    path.mkdir(exist_ok=True)
    assert_user_error(bench("score", path, "--against", f"adni:{scored['B']}"), message)


def test_rescored_tables_say_where_the_samples_come_from():
    def rec(kind, data, source=None):
        r = {"dataset": f"adni:/{data}", "preset": "tiny", "backbone_hash": "ab" * 32, "seed": 0,
             "extractor": {"name": "mri", "id": "mri-x"}, "condition": "none", "kind": kind,
             "prior": "unigram" if kind == "prior" else REFERENCE, "run_id": f"{kind}-{data}",
             "scores": {"fd": 1.0},
             "data": {"kind": "adni", "fingerprint": data * 4, "name": "AD_NC"}}
        if source:
            r["against"] = {"run_id": "unigram-1", "data": {"kind": "adni",
                                                            "fingerprint": source * 4,
                                                            "name": "AD_NC"}}
        return r

    recs = [rec("prior", "a"), rec("prior", "b", source="a"), rec("reference", "b", source="a")]
    (own, _), (other, table) = tables.comparison(recs)
    assert tables.title(own).startswith("AD_NC · preset tiny")
    assert tables.title(other).startswith("AD_NC [bbbb] test split, samples of run unigram-1 "
                                          "trained on AD_NC [aaaa] (memorised: the run's own")
    assert list(table["prior"]) == [REFERENCE, "unigram"]


def test_a_run_on_a_preset_file_needs_that_file(scored):
    run = open_run(scored["run"])
    on_file = dataclasses.replace(run, record=run.record | {"preset": "mine"})
    backbone = {"meta": {"image_size": 32, "train": {"seed": 0}}}
    with pytest.raises(BenchError, match=r"used preset 'mine', which is not a built-in preset "
                                         r".*pass its file with --preset mine\.toml"):
        data_config(ScoreConfig(run_dir=run.directory, against="mni"), on_file, backbone)
    with pytest.raises(BenchError, match="unknown preset 'mien'"):
        data_config(ScoreConfig(run_dir=run.directory, against="mni", preset="mien"), on_file,
                    backbone)


def test_a_missing_or_other_backbone_and_a_changed_prior_are_refused(scored):
    run = open_run(scored["run"])
    moved = dataclasses.replace(run, record=run.record | {"artefacts": {"backbone": "backbones/x"}})
    with pytest.raises(ArtefactError, match=f"the backbone of run {run.record['run_id']} is not "
                                            f"usable"):
        run_backbone(moved)
    other = dataclasses.replace(run, record=run.record | {"backbone_hash": "0" * 64})
    with pytest.raises(ArtefactError, match="the run names 000000000000"):
        run_backbone(other)
    export = load_export(run.artefact("export"), backbone=run.record["backbone_hash"])
    changed = dataclasses.replace(run, record=run.record | {"config": {"smoothing": 1.0}})
    with pytest.raises(ArtefactError, match=f"the prior of run {run.record['run_id']} no longer "
                                            f"loads from its record"):
        stored_prior(changed, records.read_tensors(run.directory), export, 0, torch.device("cpu"))


def test_a_score_killed_in_its_bits_resumes_them(scored, tmp_path, monkeypatch):
    """`bench score --against` keeps its bits/code's own checkpoint, as a fit does: killed part
    way, the next call goes on from the batches it finished, to an uninterrupted call's value."""
    from bench import rescore
    from tests.resumable import Killed, bits_in_batches

    seen = []

    def score(out: Path, kill_in: int | None):
        monkeypatch.setattr(rescore, "measure_bits",
                            bits_in_batches(2, seen, kill_in=kill_in, save_every_batch=True))
        return bench("score", scored["run"], "--against", f"adni:{scored['B']}", "--out", out)

    assert isinstance(score(tmp_path / "killed", kill_in=3).exception, Killed)
    assert len(list((tmp_path / "killed").glob(".partial/runs--*/bits-*.pt"))) == 1
    again = score(tmp_path / "killed", kill_in=None)
    assert again.exit_code == 0, again.output
    assert seen[-1].resumed == 4 and not list((tmp_path / "killed").glob(".partial/*/*"))
    plain = score(tmp_path / "plain", kill_in=None)
    assert plain.exit_code == 0, plain.output
    assert seen[-1].resumed == 0
    resumed, uninterrupted = ([record_of(p)["scores"]["bits_per_code"]
                               for p in (tmp_path / d).glob("runs/unigram-against-*")]
                              for d in ("killed", "plain"))
    assert resumed == uninterrupted and None not in resumed
