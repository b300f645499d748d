"""`bench perf` section "scoring": nearest-SSIM scoring by bounded search against all pairs.

A run's image scores that compare every sample with every reference image are the memorisation
threshold (real test images against training images, once per export), the memorised share and
NN-SSIM (per sample set). The search's answers equal scoring every pair (`bench.metrics.nearest`);
here both are timed on the same images, all pairs on the first `brute_queries` queries only and
scaled to all of them, so that no section runs for many minutes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from bench import metrics
from bench.metrics.nearest import nearest_ssim
from vqvae.train import to_float


def _case(queries: Tensor, refs: Tensor, fast: Callable[[], Any], brute_queries: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = fast()
    fast_s = time.perf_counter() - t0
    n = min(brute_queries, len(queries))
    t0 = time.perf_counter()
    all_pairs = metrics.ssim_matrix(queries[:n], refs).max(1).values.double()
    brute_s = (time.perf_counter() - t0) * len(queries) / n
    searched = nearest_ssim(queries[:n], refs)
    return {"queries": len(queries), "refs": len(refs), "fast_s": fast_s,
            "all_pairs_s_scaled": brute_s, "speedup": brute_s / fast_s,
            "all_pairs_timed_queries": n, "result": float(result),
            "exact_pairs_share_timed_queries": searched.exact_pairs / (n * len(refs)),
            "max_abs_diff_vs_float32_all_pairs": float((searched.values - all_pairs).abs().max())}


def measure_scoring(train: np.ndarray, real: np.ndarray, stand_in: np.ndarray,
                    brute_queries: int) -> dict[str, Any]:
    """(N, H, W) uint8 arrays: training images, real test images, and images standing in for
    samples (a split neither of the others holds)."""
    cpu = torch.device("cpu")
    train_x, real_x, samples = (to_float(a, cpu) for a in (train, real, stand_in))
    out = {"threshold": _case(real_x, train_x, lambda: metrics.memorisation_threshold(train_x, real_x),
                              brute_queries)}
    line = out["threshold"]["result"]
    out["memorised"] = _case(samples, train_x, lambda: metrics.memorised_share(samples, train_x, line),
                             brute_queries)
    out["nn_ssim"] = _case(samples, real_x, lambda: metrics.nn_ssim(samples, real_x).mean(),
                           brute_queries)
    out["resolution"] = int(train.shape[-1])
    out["threads"] = torch.get_num_threads()
    return out
