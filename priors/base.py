"""The prior plug-in contract and the registry.

A prior sees integer code grids, the codebook size K, the grid shape, optional class labels and
(if it wants them) the frozen codebook vectors: never images, never the backbone. This module
imports nothing from `bench` or `vqvae`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor

from trainkit import Checkpoint, NullCheckpoint, NullProgress, Progress  # noqa: F401  (the contract's)
from trainkit import resolve_precision

ENTRY_POINT_GROUP = "bench.priors"
PRESETS = ("tiny", "quick", "standard", "full")  # tiny: tests; quick, standard: 2 CPU cores; full: a GPU


class PriorError(ValueError):
    """A user-facing problem with a prior: unknown name, bad config, duplicate registration."""


class NoLikelihoodError(RuntimeError):
    """Raised by `log_prob` of priors that define no likelihood (never 0 or NaN instead)."""


@dataclass(frozen=True)
class CodeSet:
    """One split of a code export, as a prior sees it."""

    codes: Tensor  # (N, h, w) int64 in [0, K)
    num_codes: int  # K
    labels: Tensor | None = None  # (N,) int64 in [0, num_classes), or None

    def __post_init__(self) -> None:
        if self.codes.dim() != 3:
            raise ValueError(f"codes must be (N, h, w), got shape {tuple(self.codes.shape)}")
        if self.codes.dtype != torch.int64:
            raise ValueError(f"codes must be int64, got {self.codes.dtype}")
        if self.labels is not None and self.labels.shape != (self.codes.shape[0],):
            raise ValueError(
                f"labels must be ({self.codes.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        return (self.codes.shape[1], self.codes.shape[2])


def accepts_checkpoint(prior: "type[Prior] | Prior") -> bool:
    """True when `prior.fit` takes a `checkpoint` keyword (the built-in trainable priors do;
    outside plug-ins may not, and are then fitted without one)."""
    return "checkpoint" in inspect.signature(prior.fit).parameters


class Prior(ABC):
    """A generative model over (h, w) grids of K discrete codes.

    Subclasses set `Config` (a frozen dataclass, every field defaulted and commented) and are
    registered with `@register_prior("name")`. `preset` maps the benchmark presets to configs.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    has_likelihood: ClassVar[bool] = True
    conditional: ClassVar[bool] = False  # True: uses class labels when num_classes > 0

    def __init__(
        self,
        config: Any,
        *,
        num_codes: int,
        grid: tuple[int, int],
        num_classes: int = 0,
        codebook: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(config, self.Config):
            raise PriorError(
                f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        if num_codes < 2:
            raise PriorError(f"num_codes must be >= 2, got {num_codes}")
        if len(grid) != 2 or min(grid) < 1:
            raise PriorError(f"grid must be (h, w) with h, w >= 1, got {grid}")
        if num_classes < 0:
            raise PriorError(f"num_classes must be >= 0, got {num_classes}")
        self.config = config
        self.num_codes = num_codes
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_classes = num_classes
        self.codebook = codebook  # (K, D) float, frozen; None if the export carries none
        self.device = torch.device(device)

    @classmethod
    def preset(cls, preset: str) -> Any:
        """The config for a benchmark preset (one of PRESETS). Default: `Config()`."""
        check_preset(preset)
        return cls.Config()

    @abstractmethod
    def fit(self, train: CodeSet, val: CodeSet, *, seed: int, progress: Progress) -> dict[str, float]:
        """Train on `train`, monitor on `val`. Returns summary numbers (e.g. final val nats).
        A fit may also take `checkpoint: Checkpoint` (see `accepts_checkpoint`) to resume."""

    @abstractmethod
    def sample(
        self, n: int, *, generator: torch.Generator, labels: Tensor | None = None
    ) -> Tensor:
        """(n, h, w) int64 codes in [0, K)."""

    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """(N,) log-likelihood of each grid in nats. Priors without a likelihood raise."""
        raise NoLikelihoodError(f"prior {self.name!r} defines no likelihood")

    @property
    def uses_labels(self) -> bool:
        """True when this prior conditions on class labels (unconditional priors ignore them)."""
        return self.conditional and self.num_classes > 0

    def training_precision(self) -> str:
        """'fp32' or 'bf16': what `fit` trains in on this prior's device; a run whose config has
        a `precision` field is keyed by this resolved value. A config's precision resolves as
        `trainkit.resolve_precision` says (auto: fp32 on a CPU unless a subclass measured
        otherwise, as `NetPrior` does); priors without one train in fp32."""
        precision = getattr(self.config, "precision", None)
        return "fp32" if precision is None else resolve_precision(precision, self.device,
                                                                  cpu_auto="fp32")

    def check_codes(self, codes: Tensor) -> Tensor:
        """(N, h, w) int64 codes in [0, K) on this prior's grid, moved to `self.device`."""
        if codes.dim() != 3 or tuple(codes.shape[1:]) != self.grid:
            raise PriorError(f"codes must be (N, {self.grid[0]}, {self.grid[1]}), "
                             f"got {tuple(codes.shape)}")
        if codes.dtype != torch.int64:
            raise PriorError(f"codes must be int64, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise PriorError(f"codes must lie in [0, {self.num_codes}), "
                             f"got [{int(codes.min())}, {int(codes.max())}]")
        return codes.to(self.device)

    def check_labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        """(n,) int64 labels on `self.device` if `uses_labels`, else None (labels ignored)."""
        if not self.uses_labels:
            return None
        if labels is None:
            raise PriorError(f"prior {self.name!r} has num_classes={self.num_classes}: "
                             f"labels of shape ({n},) are required")
        if labels.shape != (n,) or labels.dtype != torch.int64:
            raise PriorError(f"labels must be ({n},) int64, got {tuple(labels.shape)} {labels.dtype}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise PriorError(f"labels must lie in [0, {self.num_classes}), "
                             f"got [{int(labels.min())}, {int(labels.max())}]")
        return labels.to(self.device)

    @abstractmethod
    def state_dict(self) -> dict[str, Tensor]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...

    def num_parameters(self) -> int:
        return sum(int(t.numel()) for t in self.state_dict().values() if t.is_floating_point())


def require(ok: bool, field: str, value: Any, expected: str) -> None:
    """Config validation for `__post_init__`: one ValueError naming the field, value and rule."""
    if not ok:
        raise ValueError(f"{field} must be {expected}, got {value!r}")


def require_positive(config: Any, *names: str) -> None:
    """`require` >= 1 for each named integer field of `config`."""
    for name in names:
        require(getattr(config, name) >= 1, name, getattr(config, name), ">= 1")


def gumbel_argmax(logits: Tensor, generator: torch.Generator) -> Tensor:
    """(n, K) -> (n,) one draw from softmax(logits) by the Gumbel-max trick.

    The noise comes from `generator` on its own device, then moves to the logits' device, so a
    CPU generator reproduces the same draws for a prior on any device.
    """
    return (logits.float() + gumbel_noise(logits.shape, generator, logits.device)).argmax(dim=-1)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator,
                 device: torch.device) -> Tensor:
    """Standard Gumbel noise -log(-log(U)), drawn on the generator's device, moved to `device`.
    One call of shape (m, *s) draws what m calls of shape s would, in order (CPU generator)."""
    u = torch.rand(shape, generator=generator, device=generator.device).to(device)
    return -torch.log(-torch.log(u))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global RNG (and `device`'s, on CUDA) seeded inside, restored on exit: random
    init and dropout are reproducible and nothing outside the block is disturbed."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def step_budget(n: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimisation steps of a fit: `epochs` passes, capped at `max_steps` when it is > 0."""
    steps = epochs * math.ceil(n / batch_size)
    return min(steps, max_steps) if max_steps > 0 else steps


def epoch_count(n: int, batch_size: int, total_steps: int) -> int:
    """Epochs (the last possibly partial) of `total_steps` batches of `batch_size` out of n."""
    return math.ceil(total_steps / math.ceil(n / batch_size))


# A Config field added after fits were stored: `cache_key_fields` leaves it out of the fit's cache
# key while it holds its default, so the fits stored before it existed are still found.
ADDED_LATER = {"added_later": True}


def cache_key_fields(config: Any) -> dict[str, Any]:
    """A prior config's fields as a fit's cache key holds them: every field, but those marked
    `field(default=..., metadata=ADDED_LATER)` at their default."""
    fields = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("added_later") and fields[f.name] == f.default:
            del fields[f.name]
    return fields


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise PriorError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")


# ---------------------------------------------------------------------------------------------
# Registry. Built-ins register on import of `priors`; outside packages through entry points.


class Registry:
    """Name -> Prior class. Entry points in group `bench.priors` are loaded on first lookup."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._classes: dict[str, type[Prior]] = {}
        self._group = group
        self._entry_points_loaded = False
        self.load_errors: dict[str, str] = {}  # entry-point name -> why it failed to load

    @property
    def group(self) -> str:
        """The entry-point group this registry loads plug-ins from."""
        return self._group

    def register(self, name: str) -> Callable[[type[Prior]], type[Prior]]:
        def decorate(cls: type[Prior]) -> type[Prior]:
            self.add(name, cls)
            return cls

        return decorate

    def add(self, name: str, cls: type[Prior]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Prior)):
            raise PriorError(f"{cls!r} registered as {name!r} is not a Prior subclass")
        taken = self._classes.get(name)
        if taken is not None and taken is not cls:
            raise PriorError(
                f"prior name {name!r} is taken by {taken.__module__}.{taken.__qualname__}; "
                f"cannot register {cls.__module__}.{cls.__qualname__}"
            )
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise PriorError(f"prior {name!r}: {cls.__qualname__}.Config must be a dataclass")
        cls.name = name
        self._classes[name] = cls

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self._group):
            taken = self._classes.get(ep.name)
            if taken is not None:  # the built-in keeps its name; say why the plug-in is out
                if ep.value != f"{taken.__module__}:{taken.__qualname__}":
                    self.load_errors[ep.name] = (f"{ep.value}: name taken by "
                                                 f"{taken.__module__}.{taken.__qualname__}")
                continue
            try:
                cls = ep.load()
                self.add(ep.name, cls)
            except Exception as e:  # a broken plug-in must not break the built-ins
                self.load_errors[ep.name] = f"{ep.value}: {type(e).__name__}: {e}"

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._classes)

    def get(self, name: str) -> type[Prior]:
        self._load_entry_points()
        if name in self._classes:
            return self._classes[name]
        if name in self.load_errors:
            raise PriorError(f"prior {name!r} failed to load from its entry point: "
                             f"{self.load_errors[name]}")
        available = sorted(self._classes)
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise PriorError(f"unknown prior {name!r}; {hint}available: {', '.join(available)}")

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._classes


REGISTRY = Registry()
register_prior = REGISTRY.register


def get_prior(name: str) -> type[Prior]:
    return REGISTRY.get(name)


def available_priors() -> list[str]:
    return REGISTRY.names()
