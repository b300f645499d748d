"""`bench perf --sections bits`: FLOPs of a prior's test bits/code against closed forms, the
floor arithmetic, and the section through the CLI. No timed assertions."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import trainkit
from bench import perf, perf_bits
from bench.cli_perf import perf_app
from bench.perf_bits import (FLOP_FORMULAS, attention_flops, causal_pairs, likelihood_priors,
                             log_prob_flops, with_floors)
from bench.presets import get_preset
from bench.sampling import DEFAULT_BITS_BATCH, bits_batch, measure_bits
from priors import CodeSet, get_prior


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_causal_pairs_by_hand():
    assert causal_pairs(4, 4) == 1 + 2 + 3 + 4 == 4 * 5 // 2
    assert causal_pairs(3, 5) == 1 + 2 + 3  # queries see keys 0..i (top-left aligned)
    assert causal_pairs(5, 3) == 1 + 2 + 3 + 3 + 3


@pytest.mark.parametrize("is_causal", [False, True])
def test_sdpa_is_counted_on_the_cpu_as_its_products_over_the_pairs_kept(is_causal):
    q, k, v = (torch.randn(2, 3, 10, 4) for _ in range(3))  # the CPU flash kernel's shapes
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert plain.get_total_flops() == 0  # why the section maps the CPU kernel itself
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as ours:
        F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    with FlopCounterMode(display=False) as explicit:  # the same products as two bmm
        torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    pairs = 10 * 11 // 2 if is_causal else 100
    assert ours.get_total_flops() == 2 * 2 * 3 * pairs * (4 + 4) == attention_flops(
        q.shape, k.shape, v.shape, is_causal)
    assert explicit.get_total_flops() == attention_flops(q.shape, k.shape, v.shape, False)


def test_transformer_log_prob_flops_equal_a_closed_form():
    """Every linear layer (2 x in x out a position), causal attention, the output head."""
    preset = get_preset("tiny")
    cls = get_prior("transformer")
    cfg = preset.prior_config(cls)
    K, side, D = 16, 4, cfg.dim
    prior = cls(cfg, num_codes=K, grid=(side, side))
    L, hidden = side * side, cfg.mlp_ratio * cfg.dim
    per_layer = 2 * L * (D * 3 * D + D * D + D * hidden + hidden * D) \
        + 2 * cfg.n_heads * causal_pairs(L, L) * 2 * (D // cfg.n_heads)
    per_grid = cfg.n_layers * per_layer + 2 * L * D * K
    codes = torch.randint(0, K, (3, side, side), generator=torch.Generator().manual_seed(0))
    assert log_prob_flops(prior, codes) == 3 * per_grid


def test_floors_from_known_rates_and_peaks():
    row = {"prior": "p", "flops_per_grid": 2e9, "fp32_grids_per_s": 10.0,
           "bf16_grids_per_s": 40.0}
    peaks = {"fp32": {"best_flops_per_s": 100e9}, "bf16": {"best_flops_per_s": 400e9}}
    out = with_floors(row, peaks, test_grids=8000)
    assert out["fp32_test_s"] == 800.0 and out["bf16_test_s"] == 200.0
    assert out["fp32_floor_s"] == 2e9 * 8000 / 100e9 == 160.0
    assert out["bf16_floor_s"] == 40.0
    assert out["share_of_fp32_matmul_peak"] == 0.2 and out["share_of_bf16_matmul_peak"] == 0.2
    assert "fp32_test_s" not in row  # a copy
    only_fp32 = with_floors({"flops_per_grid": 1.0, "fp32_grids_per_s": 1.0}, peaks, 1)
    assert "bf16_test_s" not in only_fp32  # a precision not timed gets no columns


def test_likelihood_priors_are_the_network_priors_that_score_grids():
    names = likelihood_priors()
    assert {"pixelcnn", "gated-pixelcnn", "transformer", "maskgit"} <= set(names)
    assert "dcgan" not in names and "uniform" not in names  # no likelihood; no network


@pytest.mark.parametrize("bf16", [False, True])
def test_bits_section_through_the_cli(tmp_path, monkeypatch, bf16):
    for module in (perf, trainkit):  # any CPU can autocast; or none has native bf16
        monkeypatch.setattr(module, "native_bf16_cpu", lambda: bf16)
    out = tmp_path / "p.json"
    result = CliRunner().invoke(perf_app, ["--preset", "tiny", "--device", "cpu", "--sections",
                                           "bits", "--out", str(out),
                                           "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "floor s (at matmul peak)" in result.output
    section = json.loads(out.read_text())["bits"]
    precisions = ["fp32", "bf16"] if bf16 else ["fp32"]
    assert set(section["matmul_peak"]) == set(precisions)
    assert [r["prior"] for r in section["priors"]] == likelihood_priors()
    tiny = perf.perf_sizes("tiny")
    assert section["grids_timed"] == tiny.bits_grids and section["test_grids"] > 0
    assert section["batch"] == bits_batch(torch.device("cpu"))
    for r in section["priors"]:
        assert positive(r["flops_per_grid"]) and r["grids"] == tiny.bits_grids
        for p in precisions:
            for key in (f"{p}_grids_per_s", f"{p}_test_s", f"{p}_floor_s",
                        f"share_of_{p}_matmul_peak"):
                assert positive(r[key]), (r["prior"], key)
            assert len(r[f"{p}_runs_grids_per_s"]) == tiny.bits_rounds
        assert ("bf16_speedup" in r) == bf16


def test_bits_sizes_are_validated():
    with pytest.raises(ValueError, match="bits_grids must be >= 1"):
        perf.PerfSizes(**{**vars(perf.perf_sizes("tiny")), "bits_grids": 0})


def test_a_convolution_is_counted_over_its_nonzero_weights():
    x = torch.randn(2, 4, 9, 7)
    w = torch.randn(6, 2, 3, 3)  # groups=2: each output channel sees 2 of the 4 inputs
    w[:, :, 2] = 0  # a masked-out kernel row
    w[0, 1, 0, 0] = 0
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        y = F.conv2d(x, w, stride=2, padding=1, dilation=1, groups=2)
    nonzero = 6 * 2 * 6 - 1
    assert counter.get_total_flops() == 2 * 2 * nonzero * y.shape[2] * y.shape[3]


def test_pixelcnn_log_prob_flops_equal_its_kept_taps():
    """Each masked conv: 2 x positions x c_in x c_out x taps its mask keeps (7x7 type A: 24 of
    49); each per-position linear: 2 x positions x in x out. A dense count would be larger."""
    from priors.autoregressive import CausalConv2d
    cls = get_prior("pixelcnn")
    side, K = 5, 16
    prior = cls(get_preset("tiny").prior_config(cls), num_codes=K, grid=(side, side))
    per_grid = 0
    for module in prior.net.modules():
        if isinstance(module, CausalConv2d):
            c = module.conv
            per_grid += 2 * side * side * c.in_channels * c.out_channels * int(module.mask.sum())
        elif isinstance(module, torch.nn.Linear):
            per_grid += 2 * side * side * module.in_features * module.out_features
    assert any(isinstance(m, CausalConv2d) and m.mask.sum() < m.mask.numel()
               for m in prior.net.modules())
    codes = torch.randint(0, K, (2, side, side), generator=torch.Generator().manual_seed(0))
    assert log_prob_flops(prior, codes) == 2 * per_grid


def test_maskgit_log_prob_is_one_forward_of_its_net_per_decoding_step():
    cls = get_prior("maskgit")
    side, K = 4, 16
    prior = cls(get_preset("tiny").prior_config(cls), num_codes=K, grid=(side, side))
    codes = torch.randint(0, K, (2, side, side), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as one:
        prior.net(codes.flatten(1))
    assert len(prior.groups) > 1
    assert log_prob_flops(prior, codes) == len(prior.groups) * one.get_total_flops()


def test_the_test_bits_run_a_small_batch_on_the_cpu_and_a_large_one_elsewhere():
    assert bits_batch(torch.device("cpu")) == 16
    assert bits_batch(torch.device("cuda")) == DEFAULT_BITS_BATCH == 256


@pytest.mark.parametrize("name", likelihood_priors())
def test_the_batch_changes_the_speed_of_the_test_bits_not_their_value(name):
    cls = get_prior(name)
    prior = cls(get_preset("tiny").prior_config(cls), num_codes=16, grid=(4, 4))
    test = CodeSet(torch.randint(0, 16, (40, 4, 4), generator=torch.Generator().manual_seed(1)), 16)
    by_default = measure_bits(prior, test)  # 16 a call on the CPU: 3 calls, the last short
    assert by_default.bits == pytest.approx(measure_bits(prior, test, 256).bits, rel=1e-12)
    assert by_default.bits == pytest.approx(measure_bits(prior, test, 7).bits, rel=1e-12)
