"""Comparison tables: seeds pooled as mean +/- 95% t-interval, per-class columns, empty cells,
the backbone's scores in every format, one table per dataset however its path is spelled."""

import json
import math

import pytest

from bench import tables
from bench.data import DataConfig, dataset_identity, display_name, fingerprint_of
from tests.conftest_data import make_adni

BACKBONE = {"recon_ssim": 0.9123, "recon_psnr": 27.314, "train_distinct_codes": 64.0,
            "test_distinct_codes": 63.0, "train_code_perplexity": 52.06,
            "test_code_perplexity": 52.64}


def record(prior, seed, scores, condition="none"):
    return {"dataset": "mni", "preset": "tiny", "backbone_hash": "ab" * 32, "seed": seed,
            "extractor": {"name": "mri", "id": "mri-x"}, "condition": condition, "prior": prior,
            "kind": "prior", "run_id": f"{prior}{seed}", "device": "cpu", "scores": scores}


def test_seeds_pool_to_mean_and_95_percent_t_interval():
    recs = [record("pixelcnn", s, {"bits_per_code": v, "fd": 2.0}) for s, v in
            enumerate([1.0, 2.0, 3.0])]
    [(meta, table)] = tables.comparison(recs)
    cell = table.loc[0, "bits_per_code"]
    assert cell.mean == pytest.approx(2.0) and cell.n == 3
    assert cell.half_width == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    text = tables.as_text_frame(meta, table)
    assert text.loc[0, "bits/code"] == "2.000 ± 2.484"
    assert text.loc[0, "FD-mri"] == "2.00 ± 0.00"


def test_missing_likelihood_stays_empty_never_zero():
    recs = [record("dcgan", 0, {"bits_per_code": None, "fd": 1.0})]
    [(meta, table)] = tables.comparison(recs)
    assert tables.as_text_frame(meta, table).loc[0, "bits/code"] == ""
    flat = tables.to_flat([(meta, table)]).loc[0, "bits/code"]
    assert flat is None or math.isnan(flat), flat  # empty, never 0.0


def test_per_class_scores_get_their_own_columns(tmp_path):
    recs = [record("gated-pixelcnn", 0, {"fd": 1.0, "fd[AD]": 1.5, "nn_ssim[NC]": 0.5}, "label")]
    groups = tables.comparison(recs)
    text = tables.as_text_frame(*groups[0])
    assert text.loc[0, "FD-mri [AD]"] == "1.50" and text.loc[0, "NN-SSIM [NC]"] == "0.500"
    paths = tables.write_all(groups, tmp_path)
    assert "FD-mri [AD]" in paths[0].read_text() and "FD-mri [AD] ci95" in paths[1].read_text()
    assert "fd" not in paths[1].read_text().splitlines()[0].split(",")
    assert "conditioned on label" in paths[0].read_text()


def test_settings_are_never_mixed():
    a = record("pixelcnn", 0, {"fd": 1.0})
    b = record("pixelcnn", 0, {"fd": 9.0}) | {"backbone_hash": "cd" * 32}
    assert len(tables.comparison([a, b])) == 2


def test_ceiling_rows_come_first_then_priors_by_name():
    recs = [record("uniform", 0, {"fd": 9.0}), record("data (train)", 0, {"fd": 0.3}),
            record("reference (recon)", 0, {"fd": 0.2}), record("pixelcnn", 0, {"fd": 2.0})]
    recs[1]["kind"], recs[2]["kind"] = "data", "reference"
    [(_, table)] = tables.comparison(recs)
    assert list(table["prior"]) == ["data (train)", "reference (recon)", "pixelcnn", "uniform"]


def test_backbone_scores_head_every_format(tmp_path):
    reference = record("reference (recon)", 0, {"fd": 0.2}) | {"kind": "reference"}
    prior = record("pixelcnn", 0, {"fd": 2.0}) | {"backbone": BACKBONE, "num_codes": 64}
    groups = tables.comparison([reference, prior])  # the reference row lacks "backbone"
    line = tables.backbone_line(groups[0][0])
    assert line == ("Backbone abababababab: recon SSIM 0.912, PSNR 27.31 dB (whole test split); "
                    "codes used 64 (train), 63 (test) of K = 64; perplexity 52.1 (train), "
                    "52.6 (test)")
    md, csv, tex, js = (p.read_text() for p in tables.write_all(groups, tmp_path))
    assert md.splitlines()[2] == line
    assert "recon SSIM 0.912" in tex and "PSNR 27.31 dB" in tex
    header = csv.splitlines()[0].split(",")
    assert "backbone recon SSIM" in header and "backbone codes used (test)" in header
    rows = json.loads(js)
    assert [r["backbone recon PSNR (dB)"] for r in rows] == [27.314, 27.314]
    assert [r["K"] for r in rows] == [64, 64] and rows[0]["FD-mri"] == 0.2


def test_missing_backbone_scores_are_said_never_invented():
    [(meta, _)] = tables.comparison([record("pixelcnn", 0, {"fd": 2.0})])
    assert tables.backbone_line(meta) == ("Backbone abababababab: recon and code usage scores "
                                          "not in these records")
    assert tables.to_flat(tables.comparison([record("pixelcnn", 0, {"fd": 2.0})])).loc[
        0, "backbone recon SSIM"] is None


def test_two_spellings_of_one_dataset_path_make_one_table(tmp_path, monkeypatch):
    make_adni(tmp_path / "data" / "AD_NC")
    monkeypatch.chdir(tmp_path / "data")
    config = DataConfig(resolution=32)
    recs = []
    for i, spec in enumerate(("adni:AD_NC", f"adni:{tmp_path / 'data' / 'AD_NC'}/")):
        data = dataset_identity(spec, fingerprint_of(spec, config)[0])
        recs.append(record(f"prior{i}", 0, {"fd": 1.0}) | {"dataset": spec, "data": data})
    [(meta, table)] = tables.comparison(recs)
    assert meta["dataset"] == "AD_NC" and len(table) == 2
    assert str(tmp_path) not in tables.to_markdown([(meta, table)])
    assert str(tmp_path) not in tables.to_flat([(meta, table)]).to_csv()


def test_old_records_without_data_fall_back_to_the_spec_and_its_last_component():
    old = record("pixelcnn", 0, {"fd": 1.0}) | {"dataset": "adni:/somewhere/AD_NC"}
    [(meta, _)] = tables.comparison([old])
    assert meta["dataset"] == "AD_NC" and meta["data"] == "spec:adni:/somewhere/AD_NC"
    data = {"kind": "adni", "fingerprint": "f00", "name": "AD_NC"}
    new = record("gated", 0, {"fd": 1.0}) | {"dataset": "adni:/somewhere/AD_NC", "data": data}
    cached_reference = old | {"prior": "reference (recon)", "kind": "reference"}
    [(meta, table)] = tables.comparison([new, cached_reference])  # one table, not two
    assert meta["data"] == "adni:f00" and list(table["prior"]) == ["reference (recon)", "gated"]


@pytest.mark.parametrize("spec, name", [("mni", "mni"), ("adni:/data/adni/AD_NC", "AD_NC"),
                                        ("adni:../data/AD_NC/", "AD_NC"),
                                        ("nifti:/scans/one.nii.gz", "one.nii.gz")])
def test_display_name_is_the_last_path_component(spec, name):
    assert display_name(spec) == name
    assert dataset_identity(spec, "ab12")["name"] == name


def test_display_name_of_a_relative_dot_is_the_folder_it_means(tmp_path, monkeypatch):
    (tmp_path / "scans").mkdir()
    monkeypatch.chdir(tmp_path / "scans")
    assert display_name("folder:.") == "scans" and display_name("folder:..") == tmp_path.name
