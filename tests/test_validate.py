"""`bench run` checks a prior's outputs at its boundary: before the fit (2 samples, 2 scores of
the unfitted prior) and every batch after it; a broken prior stops the run with one line naming
the prior, the method and the rule, and nothing invalid reaches a record."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import priors.base
from bench.cli import app
from bench.errors import BenchError
from bench import run as bench_run  # not `import bits_per_code_on`: pytest would collect it
from bench.validate import PriorOutputError, check_log_prob, check_samples, preflight
from priors import CodeSet, NullProgress
from tests.conftest_plugins import PLUGINS, fake_install, registry_with_builtins


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    import bench_broken_priors

    return bench_broken_priors


def make(cls, name: str = "histo", num_codes: int = 5, grid=(3, 3)):
    prior = cls(cls.Config(), num_codes=num_codes, grid=grid)
    prior.name = name
    return prior


def test_prior_output_errors_are_user_errors():
    assert issubclass(PriorOutputError, BenchError)


def test_check_samples_names_prior_method_and_rule(broken):
    prior = make(broken.HistogramPrior, "maskgit")
    codes = torch.zeros(2, 3, 3, dtype=torch.int64)
    assert check_samples(prior, codes, 2) is codes
    with pytest.raises(PriorOutputError, match=r"^prior 'maskgit': sample returned codes in "
                       r"\[5, 5\]; they must lie in \[0, K\) = \[0, 5\) \(rule sample-valid; `bench "
                       r"check-prior maskgit` checks every rule\)$"):
        check_samples(prior, codes + 5, 2)
    with pytest.raises(PriorOutputError, match=r"sample returned shape \(2, 3, 3\); it must "
                       r"return \(n, h, w\) = \(3, 3, 3\)"):
        check_samples(prior, codes, 3)


def test_check_log_prob_names_prior_method_and_rule(broken):
    prior = make(broken.HistogramPrior, "maskgit")
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
def test_preflight_stops_broken_priors(broken, cls, match):
    codes = torch.zeros(4, 3, 3, dtype=torch.int64)
    with pytest.raises(PriorOutputError, match=match):
        preflight(make(getattr(broken, cls)), codes, None)
    preflight(make(broken.HistogramPrior), codes, None)  # the example passes


def test_every_batch_is_checked_after_the_fit(broken):
    class BreaksAfterFit(broken.HistogramPrior):  # valid before the fit, broken after it
        def sample(self, n, *, generator, labels=None):
            return super().sample(n, generator=generator) + int(self.counts.any()) * 5

        def log_prob(self, codes, labels=None):
            return super().log_prob(codes).abs() if self.counts.any() else super().log_prob(codes)

    prior = make(BreaksAfterFit)
    split = CodeSet(torch.zeros(6, 3, 3, dtype=torch.int64), 5)
    preflight(prior, split.codes, None)
    prior.fit(split, split, seed=0, progress=NullProgress())
    with pytest.raises(PriorOutputError, match="sample returned codes in"):
        bench_run.sample_prior(prior, 7, seed=0, labels=None, batch=4)
    with pytest.raises(PriorOutputError, match="log_prob returned positive values"):
        bench_run.bits_per_code_on(prior, split, batch=4)


# --- through the CLI: `bench run` stops before the fit ------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """One tiny results folder: the first run builds the backbone and export the others reuse."""
    return tmp_path_factory.mktemp("results")


@pytest.fixture
def registry(broken, tmp_path, monkeypatch):
    """The process-wide registry replaced by one that also loads the broken plug-ins."""
    fake_install(tmp_path, monkeypatch, broken.ENTRY_POINTS)
    fresh = registry_with_builtins()
    monkeypatch.setattr(priors.base, "REGISTRY", fresh)
    return fresh


@pytest.mark.parametrize("name,needles", [
    ("broken-positive", ["prior 'broken-positive': log_prob returned positive values",
                         "it must return log p in nats (< 0)", "rule before-fit"]),
    ("broken-range", ["prior 'broken-range': sample returned codes in",
                      "they must lie in [0, K) = [0, 16)", "rule before-fit"]),
    ("broken-grid-log-prob", ["prior 'broken-grid-log-prob': log_prob returned shape (2, 8, 8)",
                              "shape (N,) = (2,)", "rule before-fit"]),
    ("broken-config", ["prior 'broken-config' failed to load from its entry point",
                       "PlainConfig.Config must be a dataclass"]),
    ("broken-missing", ["prior 'broken-missing' failed to load from its entry point",
                        "bench_broken_priors:NoSuchClass: AttributeError"]),
])
def test_bench_run_stops_a_broken_prior_before_the_fit(registry, results, monkeypatch, name,
                                                       needles):
    if name in registry:  # prove the fit is never reached
        monkeypatch.setattr(registry.get(name), "fit", lambda *a, **k: pytest.fail("fit ran"))
    result = runner.invoke(app, ["run", "--prior", name, "--preset", "tiny", "--out",
                                 str(results)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not list(results.glob(f"runs/{name}-*"))  # nothing invalid reaches a record
