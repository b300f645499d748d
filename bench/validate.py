"""The prior boundary of `bench run`: a prior's outputs are checked before they are used.

Before the fit, the unfitted prior samples 2 grids and scores 2 test grids, so shape, dtype,
range and sign mistakes stop a run in seconds; after it, every sample batch and every log_prob
batch is checked again. The checks and their wording are the contract's (`priors.boundary`):
the error names the prior, the method and the rule `bench check-prior` reports.
"""

from __future__ import annotations

from torch import Tensor

from bench.errors import BenchError
from priors import Prior
from priors.boundary import Problem, log_prob_problem, preflight_problem, sample_problem


class PriorOutputError(BenchError):
    """A prior returned something the contract forbids (names the prior, method and rule)."""


def raise_problem(prior: Prior, problem: Problem | None, rule: str) -> None:
    if problem is not None:
        raise PriorOutputError(f"{problem.message(prior.name)} (rule {rule}; "
                               f"`bench check-prior {prior.name}` checks every rule)")


def preflight(prior: Prior, test_codes: Tensor, labels: Tensor | None) -> None:
    """Before the fit: the unfitted prior samples 2 grids and scores 2 of `test_codes`."""
    raise_problem(prior, preflight_problem(prior, test_codes, labels), "before-fit")


def check_samples(prior: Prior, codes: Tensor, n: int) -> Tensor:
    """`codes` from `prior.sample(n)`, returned unchanged if valid."""
    raise_problem(prior, sample_problem(codes, n, prior.grid, prior.num_codes), "sample-valid")
    return codes


def check_log_prob(prior: Prior, lp: Tensor, n: int) -> Tensor:
    """`lp` from `prior.log_prob` of n grids, returned unchanged if valid."""
    raise_problem(prior, log_prob_problem(lp, n), "log-prob-valid")
    return lp
