"""`bench run` checks a prior's outputs at its boundary: before the fit (2 samples, 2 scores of
the unfitted prior) and every batch after it; a broken prior stops the run with one line naming
the prior, the method and the rule (through the CLI: tests/test_check_prior.py)."""

from __future__ import annotations

import pytest
import torch

from bench.errors import BenchError
from bench import sampling
from bench.validate import PriorOutputError, check_log_prob, check_samples, preflight
from priors import CodeSet, NullProgress


def make(cls, name: str = "histo", num_codes: int = 5, grid=(3, 3)):
    prior = cls(cls.Config(), num_codes=num_codes, grid=grid)
    prior.name = name
    return prior


def test_prior_output_errors_are_user_errors():
    assert issubclass(PriorOutputError, BenchError)


def test_check_samples_names_prior_method_and_rule(broken_plugins):
    prior = make(broken_plugins.HistogramPrior, "maskgit")
    codes = torch.zeros(2, 3, 3, dtype=torch.int64)
    assert check_samples(prior, codes, 2) is codes
    with pytest.raises(PriorOutputError, match=r"^prior 'maskgit': sample returned codes in "
                       r"\[5, 5\]; they must lie in \[0, K\) = \[0, 5\) \(rule sample-valid; `bench "
                       r"check-prior maskgit` checks every rule\)$"):
        check_samples(prior, codes + 5, 2)
    with pytest.raises(PriorOutputError, match=r"sample returned shape \(2, 3, 3\); it must "
                       r"return \(n, h, w\) = \(3, 3, 3\)"):
        check_samples(prior, codes, 3)


def test_check_log_prob_names_prior_method_and_rule(broken_plugins):
    prior = make(broken_plugins.HistogramPrior, "maskgit")
    lp = torch.tensor([-3.0, -2.0])
    assert check_log_prob(prior, lp, 2) is lp
    with pytest.raises(PriorOutputError, match=r"^prior 'maskgit': log_prob returned positive "
                       r"values \(max 40\.1\); it must return log p in nats \(< 0\) \(rule "
                       r"log-prob-valid;"):
        check_log_prob(prior, torch.tensor([-1.0, 40.1]), 2)


@pytest.mark.parametrize("cls,match", [
    ("PositiveLogProb", r"prior 'histo': log_prob returned positive values .*\(rule before-fit;"),
    ("OutOfRangeSamples", r"prior 'histo': sample returned codes in \[\d, 5\]; .*\(rule "
                          r"before-fit;"),
    ("GridLogProb", r"prior 'histo': log_prob returned shape \(2, 3, 3\); it must return one log p "
                    r"per grid: shape \(N,\) = \(2,\)"),
    ("NeedsFit", r"prior 'histo': sample raised RuntimeError: fit first; it must sample before "
                 r"fit"),
])
def test_preflight_stops_broken_priors(broken_plugins, cls, match):
    codes = torch.zeros(4, 3, 3, dtype=torch.int64)
    with pytest.raises(PriorOutputError, match=match):
        preflight(make(getattr(broken_plugins, cls)), codes, None)
    preflight(make(broken_plugins.HistogramPrior), codes, None)  # the example passes


def test_every_batch_is_checked_after_the_fit(broken_plugins):
    class BreaksAfterFit(broken_plugins.HistogramPrior):  # valid before the fit, broken after it
        def sample(self, n, *, generator, labels=None):
            return super().sample(n, generator=generator) + int(self.counts.any()) * 5

        def log_prob(self, codes, labels=None):
            return super().log_prob(codes).abs() if self.counts.any() else super().log_prob(codes)

    prior = make(BreaksAfterFit)
    split = CodeSet(torch.zeros(6, 3, 3, dtype=torch.int64), 5)
    preflight(prior, split.codes, None)
    prior.fit(split, split, seed=0, progress=NullProgress())
    with pytest.raises(PriorOutputError, match="sample returned codes in"):
        sampling.sample_prior(prior, 7, seed=0, labels=None, batch=4)
    with pytest.raises(PriorOutputError, match="log_prob returned positive values"):
        sampling.bits_per_code_on(prior, split, batch=4)
