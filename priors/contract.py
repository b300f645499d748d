"""The prior contract as library code: named rules that check one prior class in seconds.

Each rule builds tiny instances of the prior (K = 12 codes on a 4x4 grid, CPU, its "tiny"
preset), calls one method of the contract and returns what came back, or raises a `Violation`
naming the method, what came back and what was expected. `check_prior(name)` runs them all:
`tests/test_priors.py` on every registered prior and on every entry point that failed to load,
`bench check-prior` on an installed prior. No pytest here: a plug-in author needs only an install.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from priors import base
from priors.autoregressive import AutoregressivePrior
from priors.base import PRESETS, CodeSet, NoLikelihoodError, NullProgress, Prior, PriorError
from priors.boundary import log_prob_problem, preflight_problem, sample_problem
from priors.checking import (GRID, K, N_CLASSES, Rule, RuleResult, Skip, Subject, Violation, fail,
                             load_subject, names_to_check, off_seed_rng_state, run_rule)

NORM_K, NORM_GRID, NORM_TOL = 3, (2, 2), 1e-4  # 3**4 = 81 grids: few enough to score them all
MATCH_SAMPLES, MATCH_CHI2 = 20000, 160.0  # chi-square with 80 dof: mean 80, P(> 160) ~ 1e-7
AR_K, AR_GRID = 10, (5, 6)  # autoregressive rules: a non-square grid catches row/col mix-ups


# --- the rules ---------------------------------------------------------------------------------


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_entry_point(s: Subject) -> str:
    if s.load_error:
        raise fail("entry point", f"failed to load: {s.load_error}", ENTRY_POINT)
    return f"resolves to {s.cls.__module__}.{s.cls.__qualname__}"


def check_config(s: Subject) -> str:
    cfg = s.cls.Config
    if not (isinstance(cfg, type) and dataclasses.is_dataclass(cfg)):
        raise fail("Config", f"is a {type(cfg).__name__} that is not a dataclass", CONFIG)
    if not cfg.__dataclass_params__.frozen:
        raise fail("Config", "is a dataclass but not frozen", CONFIG)
    missing = [f.name for f in dataclasses.fields(cfg)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise fail("Config", f"has fields without a default: {', '.join(missing)}", CONFIG)
    cfg()
    return f"is a frozen dataclass of {len(dataclasses.fields(cfg))} defaulted field(s)"


def check_preset(s: Subject) -> str:
    for name in PRESETS:
        cfg = s.cls.preset(name)
        if not isinstance(cfg, s.cls.Config):
            raise fail("preset", f"({name!r}) returned a {type(cfg).__name__}",
                       f"it must return a {s.cls.__qualname__}.Config")
    return f"returned a Config for each of {', '.join(PRESETS)}"


def check_init_rng(s: Subject) -> str:
    before = off_seed_rng_state()
    s.make()
    if not torch.equal(before, torch.random.get_rng_state()):
        raise fail("__init__", "changed torch's global RNG state", GLOBAL_RNG)
    return "left torch's global RNG state untouched"


def check_before_fit(s: Subject) -> str:
    split = s.split(2, 5)
    problem = preflight_problem(s.make(), split.codes, split.labels)
    if problem is not None:
        raise Violation(problem)
    return "gave valid output on the unfitted prior (2 grids each)"


def check_fit_result(s: Subject) -> str:
    result = s.fitted()["result"]
    if not (isinstance(result, dict) and all(isinstance(k, str) and type(v) is float
                                             for k, v in result.items())):
        raise fail("fit", f"returned {str(result)[:80]}", FIT_RESULT)
    return f"returned {{{', '.join(result)}}}"


def check_fit_rng(s: Subject) -> str:
    fitted = s.fitted()
    if not torch.equal(fitted["rng_before"], fitted["rng_after"]):
        raise fail("fit", "changed torch's global RNG state", GLOBAL_RNG)
    return "left torch's global RNG state untouched"


def check_fit_deterministic(s: Subject) -> str:
    a, b = s.fitted_prior(), s.make()
    torch.manual_seed(12345)  # another global state (restored by run_rule): only seed may matter
    b.fit(s.split(16, 0), s.split(4, 1), seed=0, progress=NullProgress())
    sa, sb = a.state_dict(), b.state_dict()
    differ = sorted(set(sa) ^ set(sb)) or [k for k in sa if not torch.equal(sa[k], sb[k])]
    if differ:
        raise fail("fit", f"gave different state_dict entries ({', '.join(differ[:3])}) "
                   "in two fits with seed 0", "it must be deterministic given seed")
    return f"gave equal state_dicts ({len(sa)} tensors) in two fits with seed 0"


def check_sample_valid(s: Subject) -> str:
    codes = s.fitted_prior().sample(5, generator=generator(0), labels=s.labels(5))
    problem = sample_problem(codes, 5, GRID, K)
    if problem is not None:
        raise Violation(problem)
    return f"returned {tuple(codes.shape)} int64 codes in [{int(codes.min())}, {int(codes.max())}]"


def check_sample_seeded(s: Subject) -> str:
    prior = s.fitted_prior()
    a, b = (prior.sample(5, generator=generator(1), labels=s.labels(5)) for _ in range(2))
    if not torch.equal(a, b):
        raise fail("sample", "drew different grids from two generators seeded alike",
                   "it must draw all its randomness from `generator`")
    return "drew equal grids from two generators seeded alike"


def check_labels_required(s: Subject) -> str:
    if not s.cls.conditional:
        raise Skip("not checked: the prior is not conditional")
    try:
        s.fitted_prior().sample(2, generator=generator(0))
    except PriorError as e:
        return f"raised PriorError without labels ({str(e)[:60]})"
    raise fail("sample", "returned grids without labels (num_classes = 3)",
               "a conditional prior must raise PriorError: call self.check_labels(labels, n)")


def check_state_round_trip(s: Subject) -> str:
    prior = s.fitted_prior()
    state = prior.state_dict()
    odd = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if odd:
        raise fail("state_dict", f"holds non-tensors: {', '.join(odd[:3])}", ROUND_TRIP)
    fresh = s.make()
    fresh.load_state_dict(state)
    draw = lambda p: p.sample(5, generator=generator(7), labels=s.labels(5))  # noqa: E731
    if not torch.equal(draw(prior), draw(fresh)):
        raise fail("load_state_dict", "gave a prior that samples other grids", ROUND_TRIP)
    if prior.has_likelihood:
        codes = s.split(5, 3).codes
        if not torch.equal(prior.log_prob(codes, s.labels(5)), fresh.log_prob(codes, s.labels(5))):
            raise fail("load_state_dict", "gave a prior that scores grids otherwise", ROUND_TRIP)
    return f"of {len(state)} tensors restores equal samples" + (
        " and log_prob" if prior.has_likelihood else "") + " in a fresh instance"


def check_log_prob_valid(s: Subject) -> str:
    prior, codes, labels = s.fitted_prior(), s.split(5, 2).codes, s.labels(5)
    codes[3] = codes[0]  # labels (if any) are 0, 1, 2, 0, 1: grid 3 equals grid 0
    if not s.cls.has_likelihood:
        try:
            out = prior.log_prob(codes, labels)
        except NoLikelihoodError:
            return "raised NoLikelihoodError (has_likelihood is False)"
        raise fail("log_prob", f"returned a {type(out).__name__}", NO_LIKELIHOOD)
    lp = prior.log_prob(codes, labels)
    problem = log_prob_problem(lp, 5)
    if problem is not None:
        raise Violation(problem)
    if abs(float(lp[3]) - float(lp[0])) > 1e-6:
        raise fail("log_prob", f"returned {float(lp[0]):.6g} and {float(lp[3]):.6g} for equal "
                   "grids", "it must score equal grids equally")
    return (f"returned ({len(lp)},) {lp.dtype} in [{float(lp.min()):.4g}, {float(lp.max()):.4g}]"
            ", equal for equal grids")


def normalisation_split(n: int, seed: int, labelled: bool) -> CodeSet:
    """Skewed, correlated 2x2 grids of K = 3 codes (per-class shifted), so a fitted prior is far
    from uniform: p(code) = .6/.3/.1, the bottom-right code copies the top-left."""
    g = generator(seed)
    codes = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n * 4, replacement=True,
                              generator=g).view(n, *NORM_GRID)
    codes[:, 1, 1] = codes[:, 0, 0]
    labels = torch.arange(n) % N_CLASSES
    if labelled:
        codes = (codes + labels[:, None, None]) % NORM_K
    return CodeSet(codes, NORM_K, labels if labelled else None)


def all_grids() -> Tensor:  # (81, 2, 2): every 2x2 grid of K = 3 codes, in base-3 order
    return torch.cartesian_prod(*[torch.arange(NORM_K)] * 4).view(-1, *NORM_GRID)


def normalisation_prior(s: Subject) -> Prior:
    """The prior on 2x2 grids of K = 3 codes, fitted briefly on skewed grids (built once)."""
    if not s.cls.has_likelihood:
        raise Skip("not checked: the prior has no likelihood")

    def build() -> Prior:
        prior, labelled = s.make(NORM_K, NORM_GRID), bool(s.num_classes)
        prior.fit(normalisation_split(256, 0, labelled), normalisation_split(8, 1, labelled),
                  seed=0, progress=NullProgress())
        return prior
    return s.once("normalisation", build)


def all_grid_probs(prior: Prior, label: int | None) -> Tensor:
    """(81,) float64: exp(log_prob) of every grid, checked like any log_prob output."""
    grids = all_grids()
    lp = prior.log_prob(grids, None if label is None else torch.full((len(grids),), label))
    problem = log_prob_problem(lp, len(grids))
    if problem is not None:
        raise Violation(problem)
    return lp.double().exp()


def check_log_prob_normalised(s: Subject) -> str:
    prior = normalisation_prior(s)
    probs = [all_grid_probs(prior, c) for c in (range(s.num_classes) if s.num_classes else [None])]
    sums = [float(p.sum()) for p in probs]
    worst = max(range(len(sums)), key=lambda i: abs(sums[i] - 1))  # the class furthest from 1
    if abs(sums[worst] - 1) > NORM_TOL:
        where = f" (class {worst})" if s.num_classes else ""
        raise fail("log_prob", f"of all 81 grids: exp sums to {sums[worst]:.6f}{where}",
                   NORMALISED)
    return (f"of all 81 grids: exp sums to {', '.join(f'{t:.6f}' for t in sums)} "
            f"(largest p {max(float(p.max()) for p in probs):.3g}; uniform {1 / 81:.3g})")


def check_sample_matches_log_prob(s: Subject) -> str:
    prior = normalisation_prior(s)
    label = 1 if s.num_classes else None
    n = MATCH_SAMPLES
    codes = prior.sample(n, generator=generator(3),
                         labels=None if label is None else torch.full((n,), label))
    index = codes.flatten(1).cpu() @ (NORM_K ** torch.arange(3, -1, -1))  # grid -> 0..80
    seen = torch.bincount(index, minlength=81).double()
    expected = n * all_grid_probs(prior, label).cpu()
    chi2 = float(((seen - expected) ** 2 / expected).sum())  # ~ chi-square, 80 dof, if they match
    if chi2 > MATCH_CHI2:
        raise fail("sample", f"drew 2x2 grids at chi-square {chi2:.0f} (80 dof) from "
                   f"exp(log_prob) in {n} draws", MATCHES)
    return f"drew {n} 2x2 grids at chi-square {chi2:.0f} (80 dof) from exp(log_prob)"


def autoregressive(s: Subject) -> list[tuple[AutoregressivePrior, int]]:
    """Fresh (random-init) instances of an autoregressive prior and their class counts:
    unconditional, and with 3 classes if it is conditional. Other priors skip the rule."""
    if not issubclass(s.cls, AutoregressivePrior):
        raise Skip("not checked: not an AutoregressivePrior")
    return [(s.make(AR_K, AR_GRID, c), c) for c in ((0, N_CLASSES) if s.cls.conditional else (0,))]


def check_cached_logits(s: Subject) -> str:
    worst = 0.0
    for prior, classes in autoregressive(s):
        labels = s.labels(3, classes)
        codes = prior.sample(3, generator=generator(0), labels=labels)
        full = prior.logits(codes, labels).detach()  # (3, K, h, w)
        worst = max(worst, float((prior.stepwise_logits(codes, labels) - full).abs().max()))
    if worst > 1e-5:
        raise fail("stepper", f"logits differ from the full forward by up to {worst:.3g}",
                   CACHED)
    return f"gave the full forward's logits at every position (max diff {worst:.2g})"


def check_cached_sampling(s: Subject) -> str:
    for prior, classes in autoregressive(s):
        labels = s.labels(4, classes)
        a, b = (prior.sample(4, generator=generator(5), labels=labels, use_cache=cache)
                for cache in (True, False))
        if not torch.equal(a, b):
            raise fail("sample", "drew other grids with the cache than without",
                       "cached and naive sampling must draw identical grids")
    return "drew identical grids with and without the cache"


def input_gradient(prior: AutoregressivePrior, i: int, j: int) -> Tensor:
    """(h, w) bool: positions whose input embedding moves the logits at (i, j) (float64)."""
    prior.net.double()
    codes = torch.randint(0, prior.num_codes, (1, *prior.grid), generator=generator(1))
    x = prior.net.embed(codes).movedim(-1, 1).detach().requires_grad_()  # (1, E, h, w)
    labels = prior.check_labels(torch.zeros(1, dtype=torch.int64), 1)
    prior.net.from_embedding(x, labels)[0, :, i, j].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def check_causal(s: Subject) -> str:
    prior = autoregressive(s)[0][0]
    h, w = prior.grid
    for i, j in [(0, 0), (2, 3), (h - 1, w - 1), (1, w - 1)]:
        seen = input_gradient(prior, i, j).flatten()[i * w + j:]
        if seen.any():
            p = i * w + j + int(seen.float().argmax())
            raise fail("logits", f"at {(i, j)} depend on the code at {divmod(p, w)}",
                       "logits at (i, j) must see only earlier positions in raster order")
    return "at (i, j) see no code at or after (i, j)"


ENTRY_POINT = "it must name an importable Prior subclass whose Config is a dataclass"
CONFIG = "it must be a frozen dataclass with a default for every field"
GLOBAL_RNG = ("it must leave it untouched: draw random init under "
              "priors.base.seeded(seed, device) (or torch.random.fork_rng)")
FIT_RESULT = "it must return a dict[str, float] (saved in the run's record under 'fit')"
ROUND_TRIP = "state_dict -> fresh instance -> load_state_dict must restore the prior exactly"
NO_LIKELIHOOD = "a prior with has_likelihood = False must raise NoLikelihoodError (never 0 or NaN)"
NORMALISED = f"it must be 1 within {NORM_TOL:g}: log p of a normalised distribution"
MATCHES = f"it must sample the distribution log_prob scores (chi-square <= {MATCH_CHI2:g})"
CACHED = "cached logits must equal the teacher-forced forward at every position (1e-5)"

RULES = [
    Rule("entry-point", "entry point", ENTRY_POINT, "a plug-in that fails to load is not in the "
         "benchmark; the import error says why", check_entry_point),
    Rule("config", "Config", CONFIG, "configs are hashed into run ids and rebuilt from JSON; "
         "frozen means a run's config cannot change under it", check_config),
    Rule("preset", "preset", "it must return the prior's Config for every built-in preset",
         "`bench run --preset` builds the prior from it", check_preset),
    Rule("init-rng", "__init__", GLOBAL_RNG, "bench seeds runs itself; a prior that moves the "
         "global RNG changes every later draw of the process", check_init_rng),
    Rule("before-fit", "sample/log_prob", "an unfitted prior must sample and score valid output",
         "`bench run` checks 2 samples and 2 scores before the fit, so a broken prior stops in "
         "seconds", check_before_fit),
    Rule("fit-result", "fit", FIT_RESULT, "the summary goes into the record as JSON",
         check_fit_result),
    Rule("fit-rng", "fit", GLOBAL_RNG, "as for __init__", check_fit_rng),
    Rule("fit-deterministic", "fit", "it must be deterministic given seed",
         "seeds are the only source of variation the tables report", check_fit_deterministic),
    Rule("sample-valid", "sample", "it must return (n, h, w) int64 codes in [0, K)",
         "the backbone decodes them; bench run checks every batch", check_sample_valid),
    Rule("sample-seeded", "sample", "it must draw all its randomness from `generator`",
         "reruns and resumed runs must draw the same samples", check_sample_seeded),
    Rule("labels-required", "sample", "a conditional prior must raise PriorError without labels",
         "silently unconditional samples would be scored per class", check_labels_required),
    Rule("state-round-trip", "state_dict", ROUND_TRIP, "a fit is stored as the prior's state "
         "and re-scored from it without fitting again; it must be the whole prior",
         check_state_round_trip),
    Rule("log-prob-valid", "log_prob", "it must return (N,) finite log p in nats (< 0), or "
         "raise NoLikelihoodError", "bits/code is -mean(log_prob) / (h*w ln 2); bench run "
         "checks every batch", check_log_prob_valid),
    Rule("log-prob-normalised", "log_prob", NORMALISED, "an unnormalised log_prob makes "
         "bits/code meaningless (a constant shift wins the table)", check_log_prob_normalised),
    Rule("sample-matches-log-prob", "sample", MATCHES, "bits/code and the sample scores must "
         "describe one model", check_sample_matches_log_prob),
    Rule("cached-logits", "stepper", CACHED, "cached sampling must sample the model that "
         "log_prob scores", check_cached_logits),
    Rule("cached-sampling", "sample", "cached and naive sampling must draw identical grids",
         "the cache is an optimisation, not another model", check_cached_sampling),
    Rule("causal", "logits", "logits at (i, j) must see only earlier positions in raster order",
         "otherwise log_prob is not a likelihood", check_causal),
]



def check_prior(name: str, registry: base.Registry | None = None) -> list[RuleResult]:
    """Every rule on the prior registered (or failing to load) as `name`. A prior whose entry
    point did not import gets one line: the entry-point rule with the import error."""
    subject = load_subject(name, registry)
    rules = RULES if subject.cls is not None else RULES[:1]
    return [run_rule(subject, rule) for rule in rules]


__all__ = ["RULES", "RuleResult", "Subject", "check_prior", "input_gradient", "load_subject",
           "names_to_check", "run_rule"]
