"""Plug-ins that break the contract, one way each: fixtures for `bench check-prior` and for the
boundary checks of `bench run`. Not part of the example package (tests/plugins/pyproject.toml
installs only bench_example_prior); tests declare their entry points in a fake dist-info."""

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch

from bench_example_prior import HistogramPrior


class PositiveLogProb(HistogramPrior):
    """Returns the negative log-likelihood (-log p > 0) instead of log p."""

    def log_prob(self, codes, labels=None):
        return -super().log_prob(codes, labels)


class OutOfRangeSamples(HistogramPrior):
    """Every sample holds code K at its top-left position."""

    def sample(self, n, *, generator, labels=None):
        codes = super().sample(n, generator=generator, labels=labels)
        codes[:, 0, 0] = self.num_codes
        return codes


class GridLogProb(HistogramPrior):
    """Returns log p per position (N, h, w), not summed per grid."""

    def log_prob(self, codes, labels=None):
        return self.log_probs()[self.check_codes(codes)]


class PlainConfig(HistogramPrior):
    class Config:  # not a dataclass
        alpha = 1.0


# --- one more per rule of the contract (used by tests/test_contract.py) ---


class MutableConfig(HistogramPrior):
    @dataclass
    class Config:
        alpha: float = 1.0


class ConfigWithoutDefault(HistogramPrior):
    @dataclass(frozen=True)
    class Config:
        alpha: float


class DictPreset(HistogramPrior):
    @classmethod
    def preset(cls, preset):
        return {"alpha": 1.0}


class RandomInit(HistogramPrior):
    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.counts += torch.rand(self.num_codes, dtype=torch.float64)  # the global RNG


class SeedsGlobalRng(HistogramPrior):
    def fit(self, train, val, *, seed, progress):
        torch.manual_seed(seed)  # deterministic, but every later draw of the process moves
        return super().fit(train, val, seed=seed, progress=progress)


class UnseededFit(HistogramPrior):
    def fit(self, train, val, *, seed, progress):
        with torch.random.fork_rng():  # leaves the global RNG alone, yet ignores `seed`
            result = super().fit(train, val, seed=seed, progress=progress)
            self.counts += torch.rand(self.num_codes, dtype=torch.float64)
        return result


class IntFitResult(HistogramPrior):
    def fit(self, train, val, *, seed, progress):
        super().fit(train, val, seed=seed, progress=progress)
        return {"steps": 3}


class FitRaises(HistogramPrior):
    def fit(self, train, val, *, seed, progress):
        raise RuntimeError("out of memory")


class UnseededSample(HistogramPrior):
    def sample(self, n, *, generator, labels=None):
        return torch.randint(0, self.num_codes, (n, *self.grid))


class IgnoresLabels(HistogramPrior):
    conditional = True  # but sample never calls self.check_labels


class NoState(HistogramPrior):
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class ZeroLikelihood(HistogramPrior):
    has_likelihood = False

    def log_prob(self, codes, labels=None):
        return torch.zeros(codes.shape[0])  # must raise NoLikelihoodError instead


class NeedsFit(HistogramPrior):
    def sample(self, n, *, generator, labels=None):
        if not self.counts.any():
            raise RuntimeError("fit first")
        return super().sample(n, generator=generator, labels=labels)


class SharperSamples(HistogramPrior):
    def log_probs(self):  # sample() draws from p^2 renormalised; log_prob still scores p
        sharp = 2 * super().log_probs()
        return sharp.log_softmax(0) if self._sampling else super().log_probs()

    _sampling = False

    def sample(self, n, *, generator, labels=None):
        self._sampling = True
        try:
            return super().sample(n, generator=generator, labels=labels)
        finally:
            self._sampling = False


class ShiftedDown(HistogramPrior):
    def log_prob(self, codes, labels=None):
        return super().log_prob(codes, labels) - 0.5  # still < 0, but sums to exp(-0.5)


class ShiftedUp(HistogramPrior):
    def log_prob(self, codes, labels=None):
        return super().log_prob(codes, labels) + 0.01  # still < 0, but sums to exp(0.01)


ENTRY_POINTS = {  # entry-point name -> object reference, as a pyproject would declare them
    "broken-positive": "bench_broken_priors:PositiveLogProb",
    "broken-range": "bench_broken_priors:OutOfRangeSamples",
    "broken-grid-log-prob": "bench_broken_priors:GridLogProb",
    "broken-config": "bench_broken_priors:PlainConfig",
    "broken-missing": "bench_broken_priors:NoSuchClass",
}


class KillsItsProcessOnce(HistogramPrior):
    """Its fit SIGKILLs its own process the first time (while the file named by the environment
    variable KILL_ONCE_MARKER does not exist yet): a cell of `bench sweep` dying mid-run."""

    def fit(self, train, val, *, seed, progress):
        marker = Path(os.environ["KILL_ONCE_MARKER"])
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(train, val, seed=seed, progress=progress)
