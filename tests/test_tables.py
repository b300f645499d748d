"""Comparison tables: seeds pooled as mean +/- 95% t-interval, per-class columns, empty cells."""

import math

import pytest

from bench import tables


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
    flat = tables.to_flat([(meta, table)]).loc[0, "bits_per_code"]
    assert flat is None or math.isnan(flat), flat  # empty, never 0.0


def test_per_class_scores_get_their_own_columns(tmp_path):
    recs = [record("gated-pixelcnn", 0, {"fd": 1.0, "fd[AD]": 1.5, "nn_ssim[NC]": 0.5}, "label")]
    groups = tables.comparison(recs)
    text = tables.as_text_frame(*groups[0])
    assert text.loc[0, "FD-mri [AD]"] == "1.50" and text.loc[0, "NN-SSIM [NC]"] == "0.500"
    paths = tables.write_all(groups, tmp_path)
    assert "FD-mri [AD]" in paths[0].read_text() and "fd[AD]" in paths[1].read_text()
    assert "conditioned on label" in paths[0].read_text()


def test_settings_are_never_mixed():
    a = record("pixelcnn", 0, {"fd": 1.0})
    b = record("pixelcnn", 0, {"fd": 9.0}) | {"backbone_hash": "cd" * 32}
    assert len(tables.comparison([a, b])) == 2
