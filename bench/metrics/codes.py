"""Code-space metrics: histograms, perplexity, code usage, JS divergence, bits per code."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def code_histogram(codes: Tensor, K: int) -> Tensor:
    """(K,) int64 counts of each code over a whole split of grids (any shape)."""
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
    flat = codes.reshape(-1).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= K):
        raise ValueError(f"codes must lie in [0, {K}), got [{int(flat.min())}, {int(flat.max())}]")
    return torch.bincount(flat, minlength=K)


def _probs(hist: Tensor, name: str) -> Tensor:
    if hist.ndim != 1:
        raise ValueError(f"{name} must be a 1-D histogram, got shape {tuple(hist.shape)}")
    hist = hist.double()
    if (hist < 0).any() or not torch.isfinite(hist).all():
        raise ValueError(f"{name} must hold finite non-negative counts")
    if hist.sum() <= 0:
        raise ValueError(f"{name} is empty (all counts are zero)")
    return hist / hist.sum()


def _entropy_nats(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum()


def perplexity(hist: Tensor) -> float:
    """exp(entropy) of the code distribution: K for uniform use, 1 for a single code."""
    return float(torch.exp(_entropy_nats(_probs(hist, "hist"))))


def distinct_codes(hist: Tensor) -> int:
    """How many codes occur at least once."""
    _probs(hist, "hist")
    return int((hist > 0).sum())


def js_divergence(p_counts: Tensor, q_counts: Tensor) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1]: 0 for equal, 1 for disjoint histograms."""
    if p_counts.shape != q_counts.shape:
        raise ValueError(f"p_counts and q_counts must have the same shape, got {tuple(p_counts.shape)} "
                         f"and {tuple(q_counts.shape)}")
    p, q = _probs(p_counts, "p_counts"), _probs(q_counts, "q_counts")
    js_nats = _entropy_nats((p + q) / 2) - (_entropy_nats(p) + _entropy_nats(q)) / 2
    return float(min(max(js_nats / math.log(2), 0.0), 1.0))


def code_usage(counts: Tensor, reference_counts: Tensor) -> dict[str, float]:
    """A sample's code columns, as records name them: codes used, perplexity, and the JS
    divergence (bits) from the reference (test) histogram."""
    return {"distinct_codes": float(distinct_codes(counts)), "code_perplexity": perplexity(counts),
            "code_js_bits": js_divergence(counts, reference_counts)}


def bits_per_code(log_prob_nats: Tensor, grid: tuple[int, int]) -> float:
    """mean(-log p(grid)) / (h * w) / ln 2: log2 K for a uniform prior."""
    if log_prob_nats.ndim != 1 or log_prob_nats.numel() == 0:
        raise ValueError(f"log_prob_nats must be a non-empty (N,) tensor, got shape {tuple(log_prob_nats.shape)}")
    if not torch.isfinite(log_prob_nats).all():
        raise ValueError("log_prob_nats contains NaN or inf")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (h, w) with positive sides, got {grid}")
    h, w = grid
    return float(-log_prob_nats.double().mean() / (h * w) / math.log(2))


__all__ = ["code_histogram", "perplexity", "distinct_codes", "js_divergence", "bits_per_code"]
