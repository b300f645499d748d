"""A backbone whose reconstructions are degenerate (a collapsed decoder: one near-constant image
for every input, as seen at 128 px) is flagged in its scores and warned about, never silent."""

import json

import torch
from typer.testing import CliRunner

import bench.stages as stages
from bench import metrics
from bench.cli import app
from bench.metrics import MIN_SPREAD, degenerate_reconstruction as degenerate_backbone


def test_spread_ratios_closed_forms():
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert metrics.spread_ratios(x, x) == {"within_image": 1.0, "across_images": 1.0}
    flat = torch.full_like(x, 0.3)
    assert metrics.spread_ratios(flat, x) == {"within_image": 0.0, "across_images": 0.0}
    same = x[:1].expand_as(x).clone()  # every image reconstructed as the first one
    ratios = metrics.spread_ratios(same, x)
    assert ratios["across_images"] == 0.0 and ratios["within_image"] > 0.5


def test_the_verdict_names_each_reason_and_passes_a_sound_backbone():
    assert degenerate_backbone({"within_image": 0.9, "across_images": 0.95}, 60) == ""
    why = degenerate_backbone({"within_image": 0.01, "across_images": MIN_SPREAD / 2}, 2)
    assert "within image spread 0.01" in why and "across images spread 0.1" in why
    assert "2 code(s) used" in why


def test_a_collapsed_decoder_is_flagged_in_the_record_and_warned(tmp_path, monkeypatch):
    train = stages.train_vqvae

    def collapsed(model, *args, **kwargs):
        summary = train(model, *args, **kwargs)
        last = model.decoder.net[-1]  # the decoder's last transposed conv: a dead decoder
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(-4.0)
        return summary

    monkeypatch.setattr(stages, "train_vqvae", collapsed)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["run", "--prior", "uniform", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: the backbone's reconstructions are degenerate" in " ".join(result.stderr.split())
    record = json.loads(next((out / "runs").glob("uniform-*/record.json")).read_text())
    assert "spread" in record["backbone"]["degenerate"]
    assert record["backbone"]["recon_spread"] < MIN_SPREAD
