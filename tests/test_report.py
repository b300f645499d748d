"""`bench report` figures: each prior's fit metrics are plotted under their own names."""

from __future__ import annotations

from PIL import Image

from bench.report import curve_panels, training_curves


def rec(prior: str, seed: int, curve: dict[str, list[float]]) -> dict:
    return {"prior": prior, "seed": seed, "curves": {f"fit {prior}": curve}}


RECS = [
    rec("pixelcnn", 0, {"step": [1.0, 2.0], "val_bits_per_code": [3.0, 2.5],
                        "train_bits_per_code": [3.2, 2.7]}),
    rec("unigram", 1, {"step": [1.0], "val_bits_per_code": [3.9]}),
    rec("dcgan", 0, {"step": [1.0, 2.0], "g_loss": [0.7, 0.9], "d_loss": [1.4, 1.3]}),
    {"prior": "uniform", "seed": 0, "curves": {"fit uniform": {"step": []}}},  # reports nothing
]


def test_each_metric_name_is_a_panel_of_its_own():
    panels = curve_panels(RECS)
    assert list(panels) == ["d_loss", "g_loss", "train_bits_per_code", "val_bits_per_code"]
    assert panels["val_bits_per_code"] == [("pixelcnn s0", [1.0, 2.0], [3.0, 2.5]),
                                           ("unigram s1", [1.0], [3.9])]
    assert panels["g_loss"] == [("dcgan s0", [1.0, 2.0], [0.7, 0.9])]


def test_training_curves_writes_one_png(tmp_path):
    meta = {"curve": {"step": [1.0, 2.0, 3.0], "mse": [0.1, 0.05, 0.04]}}
    training_curves(meta, RECS, tmp_path / "training.png")
    with Image.open(tmp_path / "training.png") as image:
        assert image.format == "PNG" and image.width > image.height  # 5 panels side by side
    training_curves({}, [], tmp_path / "empty.png")  # no curves at all: the backbone panel only
    assert (tmp_path / "empty.png").stat().st_size > 0
