"""How a dataset kind plugs in: a cheap plan (identity, no decoding) and a build (decoding)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from bench.data.base import SPLITS, DataConfig, Split
from bench.errors import DataError


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Built:
    """The decoded dataset, before it is cached."""

    splits: dict[str, Split]  # in-memory arrays, one entry per name in SPLITS
    label_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # said once: conversions, skipped files


@dataclass(frozen=True)
class Plan:
    """What a spec resolves to before anything is decoded."""

    identity: object  # JSON-able: source files (path, size, mtime) or generator constants
    build: Callable[["Progress | None"], Built]  # decodes; only called on a cache miss
    notes: tuple[str, ...] = ()  # found while listing (skipped non-image files), never cached


@dataclass(frozen=True)
class Kind:
    name: str  # the part of the spec before ":"
    takes_path: bool  # "adni:PATH" vs "mni"
    config_fields: tuple[str, ...]  # DataConfig fields that change the result (cache key)
    plan: Callable[[Path | None, DataConfig], Plan] = field(repr=False)

    @property
    def usage(self) -> str:
        return f"{self.name}:PATH" if self.takes_path else self.name


def seeded_rank(key: str, seed: int) -> str:
    """A stable pseudo-random sort key for a subject: the same for a seed on every machine."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def require_nonempty(counts: dict[str, int], where: str, hint: str) -> None:
    """DataError for the first split with no images."""
    for name in SPLITS:
        if counts.get(name, 0) == 0:
            raise DataError(f"split '{name}' of {where} is empty; {hint}")
