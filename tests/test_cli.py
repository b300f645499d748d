"""`bench` end to end on the tiny preset, and one-line errors for bad input (no tracebacks)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import presets
from bench.cli import app
from bench.run import DATA_CEILING, REFERENCE

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args))


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """One tiny results folder with a uniform and a pixelcnn run on the embedded default."""
    out = tmp_path_factory.mktemp("results")
    first = bench("run", "--prior", "uniform", "--preset", "tiny", "--out", str(out))
    assert first.exit_code == 0, first.output
    second = bench("run", "--prior", "pixelcnn", "--preset", "tiny", "--out", str(out))
    assert second.exit_code == 0, second.output
    assert "backbone: cached" in second.stderr  # the second prior reuses backbone and export
    return out


def records(out: Path) -> dict[str, dict]:
    recs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/record.json")]
    return {r["prior"]: r for r in recs}


def test_run_writes_a_record_with_every_score(results):
    recs = records(results)
    assert set(recs) == {"uniform", "pixelcnn", REFERENCE, DATA_CEILING}
    scores = recs["pixelcnn"]["scores"]
    for key in ("bits_per_code", "fd", "kid", "precision", "recall", "nn_ssim", "memorisation",
                "distinct_codes", "code_perplexity", "code_js_bits", "samples_per_s", "fit_s"):
        assert scores[key] is not None, key
    assert recs["pixelcnn"]["backbone"]["recon_ssim"] > 0
    assert recs["pixelcnn"]["backbone_hash"] == recs["uniform"]["backbone_hash"]
    assert "recon_ssim" in recs[REFERENCE]["scores"]
    assert recs[DATA_CEILING]["kind"] == "ceiling"
    assert recs["pixelcnn"]["real_side"] == "decoded test codes of half the test subjects"
    timing = recs["pixelcnn"]["timing"]  # what follows the fit, in parts that add up
    assert all(timing[k] >= 0 for k in ("bits_s", "sample_s", "score_s"))
    assert timing["after_fit_s"] == pytest.approx(timing["bits_s"] + timing["sample_s"]
                                                  + timing["score_s"])
    # whether the machine was shared while it was timed: load before and after, and the cores
    assert len(timing["load_avg"]) == 2 and all(v is None or v >= 0 for v in timing["load_avg"])
    assert timing["cpu_count"] >= 1
    assert timing["fit_load_avg"] == json.loads(next((results / "fits").glob(
        "pixelcnn-*/fit.json")).read_text())["load_avg"]  # the fit's load, carried with the record
    training = recs["pixelcnn"]["backbone_training"]  # and the backbone's, in every record
    assert training["train_wall_s"] > 0 and training["steps"] > 0 and len(training["load_avg"]) == 2
    assert training == recs["uniform"]["backbone_training"]
    assert 0 < training["cpu_share"]  # the share of its threads' CPU time through the training
    (fit,) = (results / "fits").glob("pixelcnn-*/fit.json")  # the fit's wall time, likewise
    fitted = json.loads(fit.read_text())
    assert len(fitted["load_avg"]) == 2 and fitted["cpu_count"] == timing["cpu_count"]
    # and the share of its threads' CPU time it had through the whole fit, in the record too
    assert 0 < recs["pixelcnn"]["fit"]["train_cpu_share"] == fitted["fit"]["train_cpu_share"]


def test_uniform_bits_per_code_is_log2_k_exactly(results):
    rec = records(results)["uniform"]
    assert rec["scores"]["bits_per_code"] == pytest.approx(4.0, abs=1e-12)  # tiny: K = 16
    assert rec["num_codes"] == 16


def test_a_run_killed_in_its_test_bits_resumes_them(tmp_path, monkeypatch):
    """The test bits/code after a fit keeps its own checkpoint beside the fit's: a run killed
    part way through it leaves both, and the next run goes on from the batches it finished."""
    from bench import run as run_module
    from tests.resumable import Killed, bits_in_batches

    seen = []

    def args(out: Path) -> tuple[str, ...]:
        return ("run", "--prior", "pixelcnn", "--preset", "tiny", "--out", str(out),
                "--checkpoint-every", "0")
    monkeypatch.setattr(run_module, "measure_bits", bits_in_batches(4, seen, kill_in=3))
    assert isinstance(bench(*args(tmp_path / "killed")).exception, Killed)  # in the third batch
    [partial] = tmp_path.glob("killed/.partial/fits--pixelcnn-*")
    assert len(list(partial.glob("checkpoint-*.pt"))) == 1  # the fit's, still there
    assert len(list(partial.glob("bits-*.pt"))) == 1
    monkeypatch.setattr(run_module, "measure_bits", bits_in_batches(4, seen))
    again = bench(*args(tmp_path / "killed"))
    assert again.exit_code == 0, again.output
    assert seen[-1].resumed == 8 and not partial.exists()
    assert "resumed at 8 of 32 grids" in " ".join(again.stderr.split())
    plain = bench(*args(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    assert seen[-1].resumed == 0
    resumed, uninterrupted = ([json.loads(p.read_text())["scores"]["bits_per_code"]
                               for p in (tmp_path / d).glob("runs/pixelcnn-*/record.json")]
                              for d in ("killed", "plain"))
    assert resumed == uninterrupted


def test_identical_run_is_found_in_the_cache(results):
    again = bench("run", "--prior", "uniform", "--preset", "tiny", "--out", str(results))
    assert again.exit_code == 0
    assert "identical finished run found" in again.stderr


def test_compare_writes_tables(results):
    result = bench("compare", "--out", str(results))
    assert result.exit_code == 0, result.output
    for ext in ("md", "csv", "tex", "json"):
        assert (results / f"comparison.{ext}").is_file()
    md = (results / "comparison.md").read_text()
    assert "pixelcnn" in md and "uniform" in md and REFERENCE in md and DATA_CEILING in md
    assert "FD-mri" in md and "recon SSIM" in md and "recon SSIM" in result.stdout
    rows = json.loads((results / "comparison.json").read_text())
    by_prior = {r["prior"]: r for r in rows}
    assert by_prior["uniform"]["bits/code"] == pytest.approx(4.0)
    assert by_prior[REFERENCE]["bits/code"] is None  # empty, never 0
    assert by_prior[REFERENCE]["backbone recon SSIM"] > 0
    assert {r["dataset"] for r in rows} == {"mni"}


def test_compare_carries_records_from_other_folders(results, tmp_path):
    """Runs made where no disk is shared (another machine, a later session) end up in one
    table: `--from` carries their records as plain files, and the table rebuilds from those
    alone; a differing copy is kept unless --force; the store's own run wins over a carried one."""
    import shutil
    own_folder = tmp_path / "own"
    shutil.copytree(results, own_folder)
    assert bench("compare", "--out", str(own_folder)).exit_code == 0
    own = json.loads((own_folder / "comparison.json").read_text())
    ref = tmp_path / "reference"
    first = bench("compare", "--out", str(ref), "--from", str(own_folder))
    assert first.exit_code == 0, first.output
    carried = sorted((ref / "records").glob("*.json"))
    assert len(carried) == 4 and not (ref / "runs").exists()  # uniform, pixelcnn, 2 ceilings
    assert all(str(tmp_path) not in p.read_text() for p in carried)  # no local paths carried
    assert "carried 4 of 4" in first.stdout
    assert json.loads((ref / "comparison.json").read_text()) == own  # the same table
    again = bench("compare", "--out", str(ref), "--from", str(own_folder))
    assert again.exit_code == 0 and "carried 0 of 4" in again.stdout  # identical: nothing to do
    pixel = next(p for p in carried if json.loads(p.read_text())["prior"] == "pixelcnn")
    changed = json.loads(pixel.read_text())
    changed["scores"]["fd"] = 1e6
    pixel.write_text(json.dumps(changed))
    kept = bench("compare", "--out", str(ref), "--from", str(own_folder))
    assert kept.exit_code == 0 and "kept" in kept.stderr and "--force" in kept.stderr.replace("\n", "")
    assert json.loads(pixel.read_text())["scores"]["fd"] == 1e6
    # the store's own run wins: carrying the changed copy back changes nothing in own's table
    back = bench("compare", "--out", str(own_folder), "--from", str(ref))
    assert back.exit_code == 0 and json.loads((own_folder / "comparison.json").read_text()) == own
    forced = bench("compare", "--out", str(ref), "--from", str(own_folder), "--force")
    assert forced.exit_code == 0 and json.loads(pixel.read_text())["scores"]["fd"] != 1e6
    (ref / "records" / "junk.json").write_text('{"kind": "prior"}')  # not a record: skipped, named
    (ref / "records" / "renamed.json").write_text(pixel.read_text())  # name is not its run id
    skipped = bench("compare", "--out", str(ref))
    said = skipped.stderr.replace("\n", "")  # rich wraps long warnings
    assert skipped.exit_code == 0 and "junk.json" in said and "renamed.json: not a run record" in said
    assert json.loads((ref / "comparison.json").read_text()) == own
    assert_user_error(bench("compare", "--out", str(ref), "--from", str(own_folder),
                            "--from", str(tmp_path / "nowhere")), "not a results folder")
    assert len(list((ref / "records").glob("*.json"))) == 6  # the bad second --from: nothing written
    assert_user_error(bench("compare", "--out", str(ref), "--from", str(ref) + "/"), "being written")


def test_priors_lists_the_registry():
    result = bench("priors")
    assert result.exit_code == 0
    assert "pixelcnn" in result.stdout and "uniform" in result.stdout


def test_unknown_prior(tmp_path):
    assert_user_error(bench("run", "--prior", "pixelcn", "--out", str(tmp_path)),
                      "unknown prior 'pixelcn'", "did you mean 'pixelcnn'", "available:")


def test_unknown_dataset(tmp_path):
    assert_user_error(bench("run", "--prior", "uniform", "--dataset", "imagenet", "--preset", "tiny",
                            "--out", str(tmp_path)), "unknown dataset 'imagenet'", "available:")


def test_unknown_preset(tmp_path):
    assert_user_error(bench("run", "--preset", "huge", "--out", str(tmp_path)),
                      "unknown preset 'huge'", "full, quick, standard, tiny")


def test_preset_file_runs_and_a_typo_fails_in_one_line(tmp_path):
    tiny = (Path(presets.__file__).parent / "tiny.toml").read_text()
    mine = tmp_path / "mine.toml"
    mine.write_text(tiny.replace("epochs = 2", "epochs = 1"))
    result = bench("run", "--prior", "uniform", "--preset", str(mine), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    mine.write_text(tiny.replace("resolution = 32", "resolutoin = 32"))
    assert_user_error(bench("run", "--preset", str(mine), "--out", str(tmp_path / "r")),
                      "mine.toml: unknown key 'resolutoin' (did you mean 'resolution'?)")


@pytest.mark.parametrize("args, message", [
    (("--seeds", "0,x"), "--seeds must be comma-separated integers"),
    (("--seeds", "1,1"), "--seeds must list distinct integers"),
    (("--seeds", "0,-2"), "seeds must be >= 0, got -2"),
    (("--seed", "-1"), "seeds must be >= 0, got -1")])
def test_bad_seeds(tmp_path, args, message):
    assert_user_error(bench("run", *args, "--out", str(tmp_path)), message)


def test_bad_force_from(tmp_path):
    assert_user_error(bench("run", "--force-from", "samples", "--out", str(tmp_path)),
                      "unknown --force-from 'samples'", "data, backbone, export, fit, run")
    assert_user_error(bench("run", "--force", "--force-from", "fit", "--out", str(tmp_path)),
                      "give --force (every stage) or --force-from fit, not both")


def _builds(out: Path) -> dict[str, int]:
    """Each finished artefact of a results folder, by kind/name: its manifest's inode (a rebuild
    commits a new folder, so a new inode while the old one is moved aside)."""
    return {f"{m.parent.parent.name}/{m.parent.name}": m.stat().st_ino
            for m in out.glob("*/*/MANIFEST.json")}


def test_force_from_rebuilds_that_stage_and_the_later_ones_only(results, tmp_path):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(results, out)
    args = ("run", "--prior", "pixelcnn", "--preset", "tiny", "--out", str(out))
    first = json.loads(next(out.glob("runs/pixelcnn-*/record.json")).read_text())
    before = _builds(out)
    fit = bench(*args, "--force-from", "fit")
    assert fit.exit_code == 0, fit.output
    after = _builds(out)
    changed = {k for k in before if after.get(k) != before[k]}
    assert after.keys() == before.keys()  # nothing new: the same artefacts, some rebuilt
    assert {k.split("/")[0] for k in changed} == {"fits", "runs"}
    assert {k.split("/")[1].split("-")[0] for k in changed} == {"pixelcnn"}  # not the ceiling
    # rows, the uniform run, the backbone, export, extractor or data cache
    again = json.loads(next(out.glob("runs/pixelcnn-*/record.json")).read_text())
    timing = {"fit_s", "samples_per_s"}
    assert ({k: v for k, v in again["scores"].items() if k not in timing}
            == {k: v for k, v in first["scores"].items() if k not in timing})  # refitted on the
    # CPU: the same weights and scores
    run = bench(*args, "--force-from", "run")
    assert run.exit_code == 0, run.output
    last = _builds(out)
    assert {k for k in after if last[k] != after[k]} == {k for k in changed if k.startswith("runs/")}
    assert "fitted prior found" in run.stderr  # sampled and scored again from the stored fit


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_user_error(bench("run", "--prior", "uniform", "--preset", "tiny",
                            "--out", str(blocker / "results")), "cannot create or write the output folder")


def test_condition_on_unlabelled_data(results):
    assert_user_error(bench("run", "--prior", "unigram", "--preset", "tiny", "--condition", "label",
                            "--out", str(results)), "needs a labelled dataset")


def test_condition_with_an_unconditional_prior_fails_before_any_work(tmp_path):
    assert_user_error(bench("run", "--prior", "uniform", "--preset", "tiny", "--condition", "label",
                            "--out", str(tmp_path)), "not class-conditional", "gated-pixelcnn")
    assert not (tmp_path / "data").exists()  # refused before the data stage


def test_truncated_backbone_checkpoint(results, tmp_path):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(results, out)
    weights = next((out / "backbones").glob("*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert_user_error(bench("run", "--prior", "unigram", "--preset", "tiny", "--out", str(out)),
                      "fails its sha256 check", "--force")


def test_compare_with_no_runs(tmp_path):
    assert_user_error(bench("compare", "--out", str(tmp_path)), "no finished runs")


def test_report_writes_markdown_and_figures(results):
    result = bench("report", "--out", str(results))
    assert result.exit_code == 0, result.output
    md = (results / "report" / "report.md").read_text()
    assert "pixelcnn" in md and "![" in md and "recon SSIM" in md
    pngs = list((results / "report").glob("*/*.png"))
    names = {p.name for p in pngs}
    assert {"code-maps.png", "code-usage.png", "codebook-pca.png", "training.png",
            "samples-pixelcnn.png", "samples-uniform.png"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.parent.name}/{p.name})" in md


def test_conditional_and_unconditional_runs_keep_their_own_reference(tmp_path):
    from tests.conftest_data import make_adni
    spec = f"adni:{make_adni(tmp_path / 'adni', train=6, test=5, slices=2)}"
    out = str(tmp_path / "results")
    for extra in ((), ("--condition", "label"), ("--condition", "label", "--force"), ()):
        result = bench("run", "--prior", "gated-pixelcnn", "--preset", "tiny", "--dataset", spec,
                       "--out", out, *extra)
        assert result.exit_code == 0, result.output
    refs = [json.loads(p.read_text()) for p in Path(out).glob("runs/reference-*/record.json")]
    assert sorted(r["condition"] for r in refs) == ["label", "none"]  # --force overwrote neither


def test_condition_label_with_a_class_without_training_images_fails_before_training(tmp_path):
    from tests.conftest_data import make_adni
    root = make_adni(tmp_path / "adni", train=6, test=5, slices=2)
    for f in (root / "train" / "AD").iterdir():
        f.unlink()
    result = bench("run", "--prior", "unigram", "--preset", "tiny", "--dataset", f"adni:{root}",
                   "--condition", "label", "--out", str(tmp_path / "out"))
    assert_user_error(result, "class(es) AD", "no training images")
    assert not (tmp_path / "out" / "backbones").exists()


def test_empty_seeds_and_capped_samples_are_said(tmp_path, results):
    assert_user_error(bench("run", "--seeds", "", "--out", str(tmp_path)), "--seeds")
    result = bench("run", "--prior", "uniform", "--preset", "tiny", "--n-samples", "1000",
                   "--out", str(results))
    assert result.exit_code == 0, result.output
    assert "1000 samples asked for, 16 scored" in " ".join(result.stderr.split())
