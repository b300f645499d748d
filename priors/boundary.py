"""Checks of what a prior's methods return, worded for one line.

Shared by the contract (`priors.contract`, `bench check-prior`) and by `bench run`, which
applies them to every sample batch and every log_prob batch, and to an unfitted prior before
the fit: both report a broken prior in the same words, naming the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from priors.base import Prior

LIKELIHOOD = "it must return log p in nats (< 0)"


@dataclass(frozen=True)
class Problem:
    """A broken promise of the contract, read as `{method} {got}; {expected}`."""

    method: str  # the method that broke it: "sample", "log_prob", "fit", "Config", ...
    got: str  # what came back: "returned positive values (max 40.1)"
    expected: str  # what the contract asks: "it must return log p in nats (< 0)"

    def message(self, prior: str) -> str:
        return f"prior {prior!r}: {self.method} {self.got}; {self.expected}"


def sample_problem(codes: Any, n: int, grid: tuple[int, int], num_codes: int) -> Problem | None:
    """What is wrong with the output of `sample(n)` on `grid` with K = `num_codes`, or None."""
    shape = (n, *grid)
    if not isinstance(codes, Tensor):
        return Problem("sample", f"returned a {type(codes).__name__}",
                       f"it must return a tensor of shape (n, h, w) = {shape}")
    if tuple(codes.shape) != shape:
        return Problem("sample", f"returned shape {tuple(codes.shape)}",
                       f"it must return (n, h, w) = {shape}")
    if codes.dtype != torch.int64:
        return Problem("sample", f"returned dtype {codes.dtype}", "it must return int64 codes")
    if codes.numel():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= num_codes:
            return Problem("sample", f"returned codes in [{lo}, {hi}]",
                           f"they must lie in [0, K) = [0, {num_codes})")
    return None


def log_prob_problem(lp: Any, n: int) -> Problem | None:
    """What is wrong with the output of `log_prob` on n grids, or None."""
    if not isinstance(lp, Tensor):
        return Problem("log_prob", f"returned a {type(lp).__name__}",
                       f"it must return a float tensor of shape (N,) = ({n},)")
    if tuple(lp.shape) != (n,):
        return Problem("log_prob", f"returned shape {tuple(lp.shape)}",
                       f"it must return one log p per grid: shape (N,) = ({n},)")
    if not lp.is_floating_point():
        return Problem("log_prob", f"returned dtype {lp.dtype}", "it must return float log p")
    bad = int((~torch.isfinite(lp)).sum())
    if bad:
        return Problem("log_prob", f"returned {bad} NaN or infinite value(s)",
                       "it must return finite log p in nats (a prior without a likelihood "
                       "raises NoLikelihoodError)")
    top = float(lp.max()) if n else -1.0
    if top >= 0:
        sign = "positive" if top > 0 else "zero"
        return Problem("log_prob", f"returned {sign} values (max {top:.4g})", LIKELIHOOD)
    return None


def preflight_problem(prior: Prior, codes: Tensor, labels: Tensor | None) -> Problem | None:
    """The unfitted `prior` samples 2 grids and scores the first 2 of `codes` (with `labels`,
    if given): what is wrong, or None. An exception is a problem too, named by its method."""
    lab = None if labels is None else labels[:2].to(prior.device)
    try:
        out = prior.sample(2, generator=torch.Generator(prior.device).manual_seed(0), labels=lab)
    except Exception as e:  # whatever the plug-in raises becomes one line, not a traceback
        return Problem("sample", f"raised {type(e).__name__}: {e}",
                       "it must sample before fit (bench run checks 2 grids first)")
    problem = sample_problem(out, 2, prior.grid, prior.num_codes)
    if problem is not None or not prior.has_likelihood:
        return problem
    codes = codes[:2].to(prior.device)
    try:
        lp = prior.log_prob(codes, None if lab is None else lab[:len(codes)])
    except Exception as e:
        return Problem("log_prob", f"raised {type(e).__name__}: {e}",
                       "it must score grids before fit (has_likelihood is True)")
    return log_prob_problem(lp, len(codes))
