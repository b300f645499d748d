"""The contract's rules fail on priors that break them, with a line naming prior, method and
rule; the output checks shared with `bench run`; failed entry points are checked, not dropped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from priors import PriorError, contract
from priors.autoregressive import CausalConv2d
from priors.base import Registry
from priors.boundary import log_prob_problem, preflight_problem, sample_problem
from priors.pixelcnn import PixelCNNPrior
from tests.conftest_plugins import EXAMPLE, fake_install


def rule_result(cls: type, rule: str) -> contract.RuleResult:
    subject = contract.Subject(cls.__name__, cls)
    return contract.run_rule(subject, next(r for r in contract.RULES if r.name == rule))


@pytest.mark.parametrize("broken,rule,match", [
    ("PositiveLogProb", "log-prob-valid", r"log_prob returned positive values \(max \d+\.?\d*\); "
                                          r"it must return log p in nats \(< 0\)"),
    ("PositiveLogProb", "before-fit", r"log_prob returned positive values"),
    ("OutOfRangeSamples", "sample-valid", r"sample returned codes in \[0, 12\]; they must lie in "
                                          r"\[0, K\) = \[0, 12\)"),
    ("OutOfRangeSamples", "before-fit", r"sample returned codes in \[\d+, 12\]"),
    ("GridLogProb", "log-prob-valid", r"log_prob returned shape \(5, 4, 4\); it must return one "
                                      r"log p per grid: shape \(N,\) = \(5,\)"),
    ("PlainConfig", "config", "Config is a type that is not a dataclass"),
    ("MutableConfig", "config", "Config is a dataclass but not frozen"),
    ("ConfigWithoutDefault", "config", "Config has fields without a default: alpha"),
    ("DictPreset", "preset", r"preset \('tiny'\) returned a dict; it must return a "
                             r"DictPreset.Config"),
    ("RandomInit", "init-rng", "__init__ changed torch's global RNG state; it must leave it"),
    ("SeedsGlobalRng", "fit-rng", "fit changed torch's global RNG state"),
    ("UnseededFit", "fit-deterministic", r"fit gave different state_dict entries \(counts\)"),
    ("IntFitResult", "fit-result", r"fit returned \{'steps': 3\}; it must return a "
                                   r"dict\[str, float\]"),
    ("FitRaises", "fit-result", "fit raised RuntimeError: out of memory"),
    ("UnseededSample", "sample-seeded", "sample drew different grids from two generators"),
    ("IgnoresLabels", "labels-required", r"sample returned grids without labels"),
    ("NoState", "state-round-trip", "load_state_dict gave a prior that samples other grids"),
    ("ZeroLikelihood", "log-prob-valid", "log_prob returned a Tensor; a prior with "
                                         "has_likelihood = False must raise NoLikelihoodError"),
    ("NeedsFit", "before-fit", "sample raised RuntimeError: fit first; it must sample before fit"),
    ("ShiftedDown", "log-prob-normalised", r"log_prob of all 81 grids: exp sums to 0\.606531; "
                                           r"it must be 1 within 0\.0001"),
    ("ShiftedUp", "log-prob-normalised", r"log_prob of all 81 grids: exp sums to 1\.010050"),
    ("SharperSamples", "sample-matches-log-prob", r"sample drew 2x2 grids at chi-square \d+ \(80 "
                                                  r"dof\) from exp\(log_prob\) in 20000 draws"),
])
def test_each_rule_fails_on_a_prior_that_breaks_it(broken_plugins, broken, rule, match):
    result = rule_result(getattr(broken_plugins, broken), rule)
    assert result.status == "FAIL", result.line()
    assert re.search(rf"^FAIL  {rule} +prior '{broken}': {match}", result.line()), result.line()


def test_the_example_plugin_passes_every_rule(broken_plugins):
    for rule in contract.RULES:
        result = rule_result(broken_plugins.HistogramPrior, rule.name)
        assert result.ok, result.line()


def test_rules_that_need_a_failed_fit_are_skipped_not_failed_twice(broken_plugins):
    result = rule_result(broken_plugins.FitRaises, "sample-valid")
    assert result.status == "skip" and "the tiny fit raised RuntimeError" in result.message


def test_a_shifted_builtin_fails_normalisation_only():
    class Shifted(PixelCNNPrior):
        def log_prob(self, codes, labels=None):
            return super().log_prob(codes, labels) - 0.1

    assert rule_result(Shifted, "log-prob-valid").ok
    assert rule_result(PixelCNNPrior, "log-prob-normalised").ok
    result = rule_result(Shifted, "log-prob-normalised")
    assert result.status == "FAIL" and "exp sums to 0.904837" in result.message


def test_an_autoregressive_net_that_sees_its_own_position_fails():
    class SeesItself(PixelCNNPrior):
        def build_net(self):
            net = super().build_net()  # type B first conv: the current code leaks in
            net.conv_in = CausalConv2d.raster(self.config.embed_dim, self.config.channels,
                                              self.config.first_kernel, "B")
            return net

    causal = rule_result(SeesItself, "causal").message
    assert "logits at (0, 0) depend on the code at (0, 0)" in causal
    assert rule_result(SeesItself, "cached-logits").status == "FAIL"
    assert rule_result(SeesItself, "log-prob-normalised").status == "FAIL"


def test_cached_sampling_must_draw_what_naive_sampling_draws():
    class CacheDisagrees(PixelCNNPrior):
        def sample(self, n, *, generator, labels=None, use_cache=True):
            out = super().sample(n, generator=generator, labels=labels, use_cache=use_cache)
            return out if use_cache else (out + 1) % self.num_codes

    result = rule_result(CacheDisagrees, "cached-sampling")
    assert "sample drew other grids with the cache than without" in result.message


def test_a_rule_that_raises_fails_with_the_exception():
    class BadPreset(PixelCNNPrior):
        @classmethod
        def preset(cls, preset):
            raise KeyError(preset)

    assert "preset raised KeyError: 'tiny'" in rule_result(BadPreset, "preset").message


@pytest.mark.parametrize("codes,match", [
    ([[0]], r"returned a list; it must return a tensor of shape \(n, h, w\) = \(2, 3, 3\)"),
    (torch.zeros(2, 3), r"returned shape \(2, 3\); it must return \(n, h, w\) = \(2, 3, 3\)"),
    (torch.zeros(2, 3, 3), "returned dtype torch.float32; it must return int64 codes"),
    (torch.full((2, 3, 3), -1), r"returned codes in \[-1, -1\]; they must lie in \[0, K\) = "
                                r"\[0, 4\)"),
    (torch.full((2, 3, 3), 4), r"returned codes in \[4, 4\]"),
])
def test_sample_problem(codes, match):
    problem = sample_problem(codes, 2, (3, 3), 4)
    assert re.search(match, f"{problem.got}; {problem.expected}") and problem.method == "sample"


@pytest.mark.parametrize("lp,match", [
    (-1.0, r"returned a float; it must return a float tensor of shape \(N,\) = \(2,\)"),
    (-torch.ones(2, 3), r"returned shape \(2, 3\); it must return one log p per grid"),
    (-torch.ones(2, dtype=torch.int64), "returned dtype torch.int64; it must return float log p"),
    (torch.tensor([-1.0, float("nan")]), "returned 1 NaN or infinite value"),
    (torch.tensor([-1.0, -float("inf")]), "returned 1 NaN or infinite value"),
    (torch.tensor([-1.0, 40.1]), r"returned positive values \(max 40\.1\); it must return log p "
                                 r"in nats \(< 0\)"),
    (torch.tensor([-1.0, 0.0]), r"returned zero values \(max 0\)"),
])
def test_log_prob_problem(lp, match):
    problem = log_prob_problem(lp, 2)
    assert re.search(match, f"{problem.got}; {problem.expected}") and problem.method == "log_prob"


def test_valid_outputs_are_no_problem():
    assert sample_problem(torch.zeros(2, 3, 3, dtype=torch.int64), 2, (3, 3), 4) is None
    assert log_prob_problem(torch.tensor([-1.0, -2.0], dtype=torch.float64), 2) is None
    prior = contract.Subject("pixelcnn", PixelCNNPrior).make()
    assert preflight_problem(prior, torch.zeros(3, 4, 4, dtype=torch.int64), None) is None


def test_preflight_reports_log_prob_exceptions(broken_plugins):
    class Unscorable(broken_plugins.HistogramPrior):
        def log_prob(self, codes, labels=None):
            raise NotImplementedError("later")

    prior = Unscorable(Unscorable.Config(), num_codes=4, grid=(3, 3))
    problem = preflight_problem(prior, torch.zeros(2, 3, 3, dtype=torch.int64), None)
    assert problem.message("u") == ("prior 'u': log_prob raised NotImplementedError: later; it "
                                    "must score grids before fit (has_likelihood is True)")


def test_failed_entry_points_are_checked_not_left_out(broken_plugins, tmp_path, monkeypatch):
    fake_install(tmp_path, monkeypatch, EXAMPLE | broken_plugins.ENTRY_POINTS)
    registry = Registry()
    registry.add("pixelcnn", PixelCNNPrior)
    names = contract.names_to_check(registry)
    assert set(broken_plugins.ENTRY_POINTS) | {"example-histogram", "pixelcnn"} <= set(names)
    missing = contract.check_prior("broken-missing", registry)
    assert [r.rule for r in missing] == ["entry-point"] and missing[0].status == "FAIL"
    assert re.search(r"prior 'broken-missing': entry point failed to load: "
                     r"bench_broken_priors:NoSuchClass: AttributeError", missing[0].message)
    config = {r.rule: r for r in contract.check_prior("broken-config", registry)}
    assert "Config must be a dataclass" in config["entry-point"].message
    assert "Config is a type that is not a dataclass" in config["config"].message
    assert config["sample-valid"].ok  # the class loaded: its other rules still ran
    assert all(r.ok for r in contract.check_prior("example-histogram", registry))


def test_unknown_names_suggest_and_list():
    with pytest.raises(PriorError, match=r"unknown prior 'pixelcn'; did you mean 'pixelcnn'"):
        contract.check_prior("pixelcn")


def test_every_rule_is_documented():
    doc = (Path(__file__).parents[1] / "docs" / "writing-a-prior.md").read_text()
    for rule in contract.RULES:
        assert f"| `{rule.name}` |" in doc, rule.name
