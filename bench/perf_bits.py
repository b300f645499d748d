"""`bench perf` section "bits": what the test bits/code after a fit costs each network prior
with a likelihood at the preset's size, measured before any fit.

Per prior: the FLOPs of its `log_prob` per grid, its grids/s through
`bench.sampling.bits_per_code_on` (what `bench run` calls, with its batch) in fp32, which
`bench run` reports, and under bf16 autocast where the device computes bf16 natively; and from
those, for the dataset's whole test split, the seconds at that rate and the seconds its FLOPs
take at the matmul peak measured in the same run: a floor for the forward passes `log_prob`
runs, at the best rate this device multiplies at.

What is counted (`FLOP_FORMULAS`): matmuls as FlopCounterMode counts them; a convolution's
multiply-adds with nonzero weights only (a masked conv's masked-out taps are zero weights, which
FlopCounterMode counts); attention's two products over the query-key pairs its causal mask
keeps (FlopCounterMode counts the CPU kernel as 0, and every pair on CUDA). Still counted as
they run: taps that read zero padding (about 2% of pixelcnn's count at `standard`) and outputs a
net computes and drops (gated-pixelcnn's shifted-out row; maskgit, which runs its whole net at
every decoding step though it reads the logits of one group, and runs the first step, all
masks, once per grid).

Speed does not depend on the weights (MaskGIT's decoding order is fixed), so the priors are
untrained, seeded, and score random grids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import priors
from bench.perf_precision import interleaved, network_priors
from bench.presets import Preset
from bench.sampling import bits_per_code_on
from bench.timing import timed
from priors import CodeSet
from priors.base import seeded
from trainkit import train_autocast


def untrained_prior(name: str, preset: Preset, num_codes: int, side: int, device: torch.device,
                    seed: int) -> priors.Prior:
    """Prior `name` at the preset's config for side x side grids, seeded init, not fitted
    (speed does not depend on the weights): what the perf sections and scripts time."""
    cls = priors.get_prior(name)
    with seeded(seed, device):
        return cls(preset.prior_config(cls), num_codes=num_codes, grid=(side, side), device=device)


def likelihood_priors() -> list[str]:
    """Network priors (a `precision` field) with a likelihood: those whose test bits/code is
    one or more forwards of a net per grid."""
    return [n for n in network_priors() if priors.get_prior(n).has_likelihood]


def causal_pairs(q_len: int, k_len: int) -> int:
    """Query-key pairs a causal mask keeps (torch's, aligned top-left: query i sees keys 0..i)."""
    return sum(min(i + 1, k_len) for i in range(q_len))


def attention_flops(query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...],
                    is_causal: bool) -> int:
    """FLOPs of softmax(q k^T) v for shapes (B, H, L, d), (B, H, S, d), (B, H, S, dv): two
    multiply-adds per pair and channel, over the pairs the mask keeps."""
    (b, h, q_len, d), k_len, dv = query, key[-2], value[-1]
    pairs = causal_pairs(q_len, k_len) if is_causal else q_len * k_len
    return 2 * b * h * pairs * (d + dv)


def _flash(query, key, value, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs):
    return attention_flops(query, key, value, is_causal)


def _biased(query, key, value, attn_bias=None, compute_log_sumexp=False, dropout_p=0.0,
            is_causal=False, *args, out_shape=None, **kwargs):
    return attention_flops(query, key, value, is_causal)


aten = torch.ops.aten


def nonzero_weight_conv(x, w, *args, out_val=None, **kwargs) -> int:
    """FlopCounterMode's count of a convolution, of its nonzero weights only: every weight
    element takes part in the same number of multiply-adds, so the count scales exactly."""
    dense = flop_registry[aten.convolution](x, w, *args, out_val=out_val, **kwargs)
    return dense * int(w.count_nonzero()) // w.numel()


nonzero_weight_conv._get_raw = True  # FlopCounterMode hands it the tensors, not their shapes

# attention formulas get shapes (FlopCounterMode's wrapper); the conv gets the tensors
FLOP_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _flash,
                 aten._scaled_dot_product_flash_attention: _flash,
                 aten._scaled_dot_product_efficient_attention: _biased,
                 aten._scaled_dot_product_cudnn_attention: _biased,
                 aten.convolution: nonzero_weight_conv}


def log_prob_flops(prior: priors.Prior, codes: torch.Tensor) -> int:
    """FLOPs of `prior.log_prob(codes)` (see the module docstring for what is counted)."""
    with torch.no_grad(), FlopCounterMode(display=False,
                                          custom_mapping=FLOP_FORMULAS) as counter:
        prior.log_prob(codes)
    return int(counter.get_total_flops())


def measure_bits_one(name: str, preset: Preset, device: torch.device, *, grids: int,
                     rounds: int, precisions: tuple[str, ...], seed: int) -> dict[str, Any]:
    """FLOPs per grid and grids/s of one prior's test bits/code at each of `precisions`."""
    K, side = preset.vqvae.num_codes, preset.grid
    prior = untrained_prior(name, preset, K, side, device, seed)
    codes = torch.randint(0, K, (grids, side, side), generator=torch.Generator().manual_seed(seed))
    test = CodeSet(codes, K)
    n_flop = min(2, grids)
    flops = log_prob_flops(prior, codes[:n_flop].to(device)) / n_flop

    def run(precision: str) -> tuple[float, float]:
        with train_autocast(device, precision):
            return float(grids), timed(lambda: bits_per_code_on(prior, test), device)[0]

    rates = interleaved(run, rounds, precisions=precisions, unit="grids")
    return {"prior": name, "n_parameters": prior.num_parameters(), "flops_per_grid": flops,
            **rates}


def measure_test_bits(preset: Preset, device: torch.device, *, grids: int, rounds: int,
                      precisions: tuple[str, ...], seed: int) -> list[dict[str, Any]]:
    """`measure_bits_one` of every likelihood prior, in registry order."""
    return [measure_bits_one(name, preset, device, grids=grids, rounds=rounds,
                             precisions=precisions, seed=seed) for name in likelihood_priors()]


def with_floors(row: dict[str, Any], peaks: dict[str, dict[str, float]],
                test_grids: int) -> dict[str, Any]:
    """`row` with, per precision timed, the seconds of `test_grids` grids at its rate and at the
    matmul peak (`peaks[precision]['best_flops_per_s']`), and its rate's share of that peak."""
    out = dict(row)
    for p in (p for p in peaks if f"{p}_grids_per_s" in row):
        rate, peak = row[f"{p}_grids_per_s"], peaks[p]["best_flops_per_s"]
        out[f"{p}_test_s"] = test_grids / rate
        out[f"{p}_floor_s"] = row["flops_per_grid"] * test_grids / peak
        out[f"share_of_{p}_matmul_peak"] = row["flops_per_grid"] * rate / peak
    return out
