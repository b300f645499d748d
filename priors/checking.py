"""How the contract's rules run: the prior under check (`Subject`), a rule's result, loading
a prior by name (failed entry points included). The rules themselves are in `priors.contract`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

import torch
from torch import Tensor

from priors import base
from priors.base import CodeSet, NullProgress, Prior
from priors.boundary import Problem

K, GRID, N_CLASSES = 12, (4, 4), 3  # the tiny setting of every rule


class Violation(Exception):
    """Raised inside a rule: the prior broke it."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.got)
        self.problem = problem


class Skip(Exception):
    """Raised inside a rule: it does not apply, or what it needs failed under another rule."""


def fail(method: str, got: str, expected: str) -> Violation:
    return Violation(Problem(method, got, expected))


@dataclass(frozen=True)
class Rule:
    name: str  # short id shown on every line: "log-prob-valid"
    method: str  # the contract method it exercises
    expected: str  # the promise, worded as the end of a line: "it must ..."
    why: str  # the reason for the rule (docs/writing-a-prior.md says the same)
    check: Callable[["Subject"], str]  # returns what came back; raises Violation or Skip


@dataclass(frozen=True)
class RuleResult:
    prior: str
    rule: str
    status: str  # "pass", "FAIL" or "skip"
    problem: Problem  # what came back and what was expected (also on a pass)
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    @property
    def message(self) -> str:
        return self.problem.message(self.prior)

    def line(self) -> str:
        return f"{self.status:<4}  {self.rule:<19} {self.message}"


def tiny_split(n: int, seed: int, num_codes: int = K, grid: tuple[int, int] = GRID,
               labelled: bool = True) -> CodeSet:
    """n random grids (and labels in [0, N_CLASSES) if `labelled`), seeded."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, num_codes, (n, *grid), generator=g)
    labels = torch.randint(0, N_CLASSES, (n,), generator=g)
    return CodeSet(codes, num_codes, labels if labelled else None)


class Subject:
    """One prior class under check, and the fitted tiny instance its rules share."""

    def __init__(self, name: str, cls: type[Prior] | None, load_error: str | None = None) -> None:
        self.name, self.cls, self.load_error = name, cls, load_error
        self._memo: dict[str, tuple[bool, Any]] = {}

    @property
    def num_classes(self) -> int:
        return N_CLASSES if self.cls.conditional else 0

    def labels(self, n: int, num_classes: int | None = None) -> Tensor | None:
        c = self.num_classes if num_classes is None else num_classes
        return torch.arange(n) % c if c else None

    def split(self, n: int, seed: int) -> CodeSet:
        return tiny_split(n, seed, labelled=bool(self.num_classes))

    def make(self, num_codes: int = K, grid: tuple[int, int] = GRID,
             num_classes: int | None = None) -> Prior:
        """A fresh instance on the tiny preset (with a random codebook, for priors that use it)."""
        codebook = torch.randn(num_codes, 4, generator=torch.Generator().manual_seed(0))
        return self.cls(self.cls.preset("tiny"), num_codes=num_codes, grid=grid,
                        num_classes=self.num_classes if num_classes is None else num_classes,
                        codebook=codebook)

    def once(self, key: str, build: Callable[[], Any]) -> Any:
        """build() on the first call, its value (or its exception, raised again) after."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, build())
            except Exception as e:
                self._memo[key] = (False, e)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    def fitted(self) -> dict[str, Any]:
        """The tiny fit later rules read: the prior, what fit returned, the RNG around it."""
        def build() -> dict[str, Any]:
            prior = self.make()
            before = off_seed_rng_state()
            result = prior.fit(self.split(16, 0), self.split(4, 1), seed=0,
                               progress=NullProgress())
            return {"prior": prior, "result": result, "rng_before": before,
                    "rng_after": torch.random.get_rng_state()}
        return self.once("fitted", build)

    def fitted_prior(self) -> Prior:
        """For rules that need a fitted prior: skipped, not failed twice, if the fit failed."""
        try:
            return self.fitted()["prior"]
        except Exception as e:
            raise Skip(f"not checked: the tiny fit raised {type(e).__name__} "
                       f"(see rule fit-result)") from e


def load_subject(name: str, registry: base.Registry | None = None) -> Subject:
    """The class registered as `name`; for an entry point that failed to load, the class it
    names if that imports (so its other rules still run), else None. Unknown names raise."""
    registry = base.REGISTRY if registry is None else registry
    if name in registry:
        return Subject(name, registry.get(name), registry.load_errors.get(name))
    if name not in registry.load_errors:
        registry.get(name)  # raises: unknown prior, did you mean ...
    cls = None
    for ep in metadata.entry_points(group=registry.group, name=name):
        try:
            loaded = ep.load()
        except Exception:  # the registry's load error already says why
            continue
        if isinstance(loaded, type) and issubclass(loaded, Prior):
            cls = loaded
    return Subject(name, cls, registry.load_errors[name])


def names_to_check(registry: base.Registry | None = None) -> list[str]:
    """Every registered prior and every entry point that failed to load."""
    registry = base.REGISTRY if registry is None else registry
    return sorted(set(registry.names()) | set(registry.load_errors))


def run_rule(subject: Subject, rule: Rule) -> RuleResult:
    """One rule on one prior; torch's global RNG is restored afterwards whatever the prior did."""
    t0 = time.perf_counter()
    status, problem, got = "pass", None, ""
    try:
        with torch.random.fork_rng(devices=[]):
            if subject.cls is None and rule.name != "entry-point":
                raise Skip("not checked: the entry point did not load")
            got = rule.check(subject)
    except Violation as v:
        status, problem = "FAIL", v.problem
    except Skip as s:
        status, got = "skip", str(s)
    except Exception as e:  # the prior raised where the contract asks for a value
        status, problem = "FAIL", Problem(rule.method, f"raised {type(e).__name__}: {e}",
                                          rule.expected)
    problem = problem or Problem(rule.method, got, rule.expected)
    return RuleResult(subject.name, rule.name, status, problem, time.perf_counter() - t0)


def off_seed_rng_state() -> torch.Tensor:
    """Moves torch's global RNG to a state that no `torch.manual_seed` call leaves (one draw
    past a seed) and returns it: a prior that seeds the global RNG changes this state whatever
    seed it uses, while a process that happens to sit at `manual_seed(0)` would hide a call of
    `manual_seed(0)` (measured: the rule passed such a prior after other tests had seeded 0).
    run_rule restores the caller's CPU RNG state."""
    torch.random.default_generator.manual_seed(0x5EED)  # the CPU's alone: run_rule restores it
    torch.rand(1)
    return torch.random.get_rng_state()
