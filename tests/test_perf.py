"""`bench perf` on the tiny preset: every field present, positive and finite. No timed
assertions: the machine is shared and noisy; the numbers belong in the report, not here."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import trainkit
from bench import perf, perf_precision
from bench.cli_perf import perf_app
from bench.errors import BenchError
from bench.perf import (PerfConfig, autoregressive_priors, device_slug,
                        intra_op_threads, matmul_peak, parse_sections, perf_sizes, run_perf,
                        train_step_flops)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("perf")
    cfg = PerfConfig(preset="tiny", device="cpu", results_dir=tmp, cache_dir=tmp / "cache",
                     sections=("backbone", "sampling", "data", "features"))
    result = run_perf(cfg)
    return result, tmp


def test_report_written_to_the_default_path(tiny_report):
    result, tmp = tiny_report
    assert result.path == tmp / "perf-cpu.json"
    on_disk = json.loads(result.path.read_text())
    assert on_disk["preset"] == "tiny" and on_disk["device"].startswith("cpu")
    assert set(on_disk["load_average"]) == {"start", "backbone", "sampling", "data", "features"}


def test_backbone_fields(tiny_report):
    b = tiny_report[0].report["backbone"]
    for key in ("images_per_s", "steps", "wall_s", "flops_per_step", "achieved_flops_per_s",
                "share_of_fp32_matmul_peak", "n_parameters"):
        assert positive(b[key]), key
    assert positive(b["matmul_peak"]["fp32"]["best_flops_per_s"])


def test_sampling_rows_cover_every_autoregressive_prior(tiny_report):
    rows = tiny_report[0].report["sampling"]
    sizes = perf_sizes("tiny")
    cases = [(s, sizes.n_grids) for s in sizes.grids] + [(s, sizes.run_batch)
                                                          for s in sizes.run_grids]
    assert sizes.sampling_cases() == cases and sizes.run_batch != sizes.n_grids
    assert [(r["prior"], r["grid"], r["n"]) for r in rows] == [
        (p, s, n) for p in autoregressive_priors() for s, n in cases]
    for r in rows:
        for key in ("cached_s", "naive_s", "speedup", "forward_s", "cost_forward_equivalents"):
            assert positive(r[key]), (r["prior"], key)
        assert r["identical"] == 1.0  # cached and naive sampling drew the same codes
        assert r["naive_extrapolated"] == float(r["naive_positions_timed"] < r["naive_positions"])


def test_data_and_feature_fields(tiny_report):
    report = tiny_report[0].report
    for key in ("cold_images_per_s", "warm_images_per_s", "n_images"):
        assert positive(report["data"][key]), key
    for key in ("images_per_s", "wall_s", "n_images", "dim"):
        assert positive(report["features"][key]), key


def test_scoring_section_times_the_search_and_all_pairs(tmp_path):
    result = CliRunner().invoke(perf_app, ["--preset", "tiny", "--device", "cpu", "--sections",
                                           "scoring", "--out", str(tmp_path / "p.json"),
                                           "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "all pairs s (scaled)" in result.output
    scoring = json.loads((tmp_path / "p.json").read_text())["scoring"]
    sizes = perf_sizes("tiny")
    for name, refs in (("threshold", sizes.score_refs), ("memorised", sizes.score_refs),
                       ("nn_ssim", sizes.score_queries)):
        case = scoring[name]
        assert (case["queries"], case["refs"]) == (sizes.score_queries, refs)
        assert positive(case["fast_s"]) and positive(case["all_pairs_s_scaled"]), name
        assert case["max_abs_diff_vs_float32_all_pairs"] < 1e-5  # float32 all pairs vs exact


def test_autoregressive_priors_excludes_the_others():
    names = autoregressive_priors()
    assert "pixelcnn" in names and "gated-pixelcnn" in names
    assert "uniform" not in names and "unigram" not in names


def test_cli_prints_tables_and_writes_json(tmp_path):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(perf_app, ["--preset", "tiny", "--device", "cpu", "--sections",
                                           "data", "--out", str(out),
                                           "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "data loading" in result.output and f"wrote {out}" in result.output
    report = json.loads(out.read_text())
    assert positive(report["data"]["cold_images_per_s"]) and "backbone" not in report


@pytest.mark.parametrize("args, message", [
    (["--sections", "backbone,gpu"], "sections must be distinct names"),
    (["--device", "tpu"], "device must be one of"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--grids", "16,x"], "--grids must be comma-separated"),
    (["--grids", "0"], "grids must be positive"),
    (["--run-grids", "16;32"], "--run-grids must be comma-separated"),
    (["--run-grids", "-4"], "run_grids must be positive"),
    (["--max-naive-s", "0"], "max_naive_s must be > 0"),
    (["--threads", "-1"], "threads must be >= 0"),
    (["--peer", "pytorch"], "peer must be one of monai"),
    (["--precision-priors", "uniform"], "precision_priors must name network priors"),
])
def test_cli_rejects_bad_options_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(perf_app, ["--preset", "tiny", "--out", str(tmp_path / "p.json"),
                                           *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.json").exists()


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="sections must be distinct"):
        PerfConfig(sections=("data", "data"))
    with pytest.raises(ValueError, match="sections must be distinct"):
        PerfConfig(sections=())
    with pytest.raises(ValueError, match="out must be a JSON file path"):
        PerfConfig(out=tmp_path)
    with pytest.raises(BenchError, match="unknown preset"):
        perf_sizes("huge")
    sizes = perf_sizes("tiny")
    for field, bad in [("backbone_steps", 0), ("n_grids", 0), ("run_batch", 0),
                       ("n_feature_images", 0), ("precision_steps", 0), ("precision_rounds", 0),
                       ("peer_test_images", 0),
                       ("matmul_s", 0.0), ("peer_budget_s", -1.0), ("matmul_n", -1)]:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(sizes, **{field: bad})


def test_parse_sections_adds_the_peer():
    assert parse_sections("data, backbone", None) == ("data", "backbone")
    assert parse_sections("data", "monai") == ("data", "peer")
    assert parse_sections("peer", "monai") == ("peer",)


def test_train_step_flops_of_a_linear_layer():
    n, a, b = 8, 5, 3
    layer = torch.nn.Linear(a, b, bias=False)
    x = torch.randn(n, a, requires_grad=True)
    # forward x @ W.T: 2nab; backward: grad of x and grad of W, 2nab each
    assert train_step_flops(lambda: layer(x).sum()) == 6 * n * a * b
    x_const = torch.randn(n, a)
    assert train_step_flops(lambda: layer(x_const).sum()) == 4 * n * a * b


def test_matmul_peak_is_positive():
    peak = matmul_peak(torch.device("cpu"), n=32, seconds=0.0)
    assert peak["calls"] >= 3 and positive(peak["best_flops_per_s"])


def test_matmul_peak_rates_from_known_times(monkeypatch):
    times = iter([9.0, 1.0, 0.5, 2.0])  # the warm-up call, then three timed calls
    monkeypatch.setattr(perf, "timed", lambda fn, device: (next(times), None))
    peak = matmul_peak(torch.device("cpu"), n=4, seconds=0.0)
    flops = 2 * 4**3
    assert peak["calls"] == 3.0
    assert peak["best_flops_per_s"] == flops / 0.5 and peak["median_flops_per_s"] == flops / 1.0


def test_threads_are_restored():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert device_slug(torch.device("cpu")) == "cpu"


def test_missing_monai_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "monai", None)  # `import monai` now raises ImportError
    result = CliRunner().invoke(perf_app, ["--preset", "tiny", "--device", "cpu", "--peer", "monai",
                                           "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 2
    assert "pip install 'vq-prior-bench[monai]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_peer_race_against_monai(tmp_path):
    pytest.importorskip("monai")
    sizes = dataclasses.replace(perf_sizes("tiny"), peer_budget_s=0.3)
    cfg = PerfConfig(preset="tiny", device="cpu", sections=("peer",), sizes=sizes,
                     out=tmp_path / "p.json", cache_dir=tmp_path / "cache")
    peer = run_perf(cfg).report["peer"]
    assert set(peer["contenders"]) == {"ours", "monai"}
    assert 0.8 <= peer["parameter_ratio"] <= 1.2
    for c in peer["contenders"].values():
        for key in ("steps", "images_per_s", "train_s", "final_train_mse", "n_parameters",
                    "flops_per_step", "achieved_flops_per_s"):
            assert positive(c[key]), key
        assert -1.0 <= c["recon_ssim"] <= 1.0
        assert 1 <= c["codes_used"] <= c["num_codes"] == 16
        assert set(c["spread"]) == {"within_image", "across_images"}
        assert c["degenerate"] is None or isinstance(c["degenerate"], str)
    # a speed ratio only between two contenders that learnt something
    ok = all(c["degenerate"] is None for c in peer["contenders"].values())
    assert (peer["images_per_s_ratio"] is not None) == ok


@pytest.mark.parametrize("preset", ["tiny", "quick", "standard", "full"])
def test_monai_is_sized_like_our_backbone(preset):
    pytest.importorskip("monai")
    from bench.peers.monai_vqvae import matched_config, n_parameters
    from bench.presets import get_preset
    from vqvae import VQVAE

    cfg = get_preset(preset).vqvae
    ratio = n_parameters(matched_config(cfg).build()) / n_parameters(VQVAE(cfg))
    assert 0.8 <= ratio <= 1.2


def test_run_grids_option_and_bench_runs_batch():
    from bench.cli_perf import sized
    from bench.sampling import SAMPLE_BATCH
    assert perf_sizes("quick").run_batch == perf_sizes("full").run_batch == SAMPLE_BATCH
    assert sized("quick", None, None, None, "none").run_grids == ()
    quick = sized("quick", "8", None, None, "16,24")
    assert quick.sampling_cases() == [(8, 8), (16, SAMPLE_BATCH), (24, SAMPLE_BATCH)]


def test_precision_section_times_fp32_and_bf16_side_by_side(tmp_path, monkeypatch):
    for module in (perf_precision, trainkit):  # any CPU can autocast
        monkeypatch.setattr(module, "native_bf16_cpu", lambda: True)
    out = tmp_path / "p.json"
    result = CliRunner().invoke(perf_app, ["--preset", "tiny", "--device", "cpu", "--sections",
                                           "precision", "--precision-priors", "pixelcnn,maskgit",
                                           "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "bf16 speed-up" in result.output
    section = json.loads(out.read_text())["precision"]
    assert section["bf16_native"] and set(section["contenders"]) == {"backbone", "pixelcnn",
                                                                     "maskgit"}
    for name, c in section["contenders"].items():
        for key in ("fp32_steps_per_s", "bf16_steps_per_s", "bf16_speedup", "batch_size"):
            assert positive(c[key]), (name, key)
        assert c["steps"] == perf_sizes("tiny").precision_steps
        assert len(c["bf16_speedup_runs"]) == perf_sizes("tiny").precision_rounds


def test_precision_section_says_in_one_line_when_the_cpu_has_no_bf16(monkeypatch):
    monkeypatch.setattr(perf_precision, "native_bf16_cpu", lambda: False)
    from bench.presets import get_preset
    section = perf_precision.measure_precision(get_preset("tiny"), np.zeros((0, 32, 32), np.uint8),
                                               torch.device("cpu"), steps=1, rounds=1,
                                               prior_names=("pixelcnn",), seed=0)
    assert not section["bf16_native"] and "no native bf16" in section["note"]
    assert "contenders" not in section


def test_network_priors_are_those_with_a_precision_field():
    assert {"pixelcnn", "gated-pixelcnn", "transformer", "maskgit"} <= set(
        perf_precision.network_priors())
    assert "uniform" not in perf_precision.network_priors()


def test_monai_codebook_starts_on_encoder_outputs_and_keeps_its_codes():
    """MONAI's EMA update divides every code unused at the first update by its epsilon (cluster
    sizes start at 0): the race's recipe puts the codebook on encoder outputs first."""
    pytest.importorskip("monai")
    from bench.peers.monai_vqvae import build
    from bench.presets import get_preset
    contender = build(get_preset("tiny").vqvae, seed=0)
    model = contender.model.train()
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    contender.prepare(x)
    q = model.quantizer.quantizer
    with torch.no_grad():
        flat = model.encode(x).permute(0, 2, 3, 1).reshape(-1, q.embedding_dim)
        assert torch.cdist(q.embedding.weight, flat).min(1).values.max() < 1e-5  # on outputs
        assert torch.equal(q.ema_w, q.embedding.weight) and bool((q.ema_cluster_size == 1).all())
        contender.forward(x)  # one EMA update: the codes stay near the encoder outputs
        assert float(q.embedding.weight.norm(dim=1).max()) < 10 * float(flat.norm(dim=1).max())
        assert contender.codes(x).unique().numel() > q.num_embeddings // 2


def test_peer_table_flags_a_degenerate_contender_and_prints_no_speed_ratio():
    from rich.console import Console

    from bench.cli_perf import _peer
    row = {"n_parameters": 10, "flops_per_step": 1e9, "steps": 3, "images_per_s": 50.0,
           "final_train_mse": 0.1, "codes_used": 1, "num_codes": 16, "recon_ssim": 0.5,
           "degenerate": None}
    report = {"budget_s": 1.0, "batch_size": 4, "resolution": 32, "precision": "fp32",
              "optimizer": "AdamW", "images_per_s_ratio": None,
              "contenders": {"ours": row, "monai": row | {
                  "images_per_s": 99.0, "degenerate": "across images spread 0 of the data's"}}}
    console = Console(width=400, record=True)
    console.print(_peer(report, "peer"))
    lines = {ln.split("│")[1].strip(): ln for ln in console.export_text().splitlines()
             if ln.startswith("│")}
    cells = {name: [c.strip() for c in line.split("│")[1:-1]] for name, line in lines.items()}
    assert cells["monai"][-1] == "degenerate: across images spread 0 of the data's"
    assert cells["ours"][-1] == "ok"
    assert cells["monai"][5] == cells["ours"][5] == "-"  # images/s vs ours: no ratio
