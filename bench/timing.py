"""Wall-clock measurements for `bench perf`: a device-synchronised timer, the teacher-forced
forward of an autoregressive prior, its cached vs naive sampling, and dataset loading.

The priors and the data layer only do the work; timing it lives here, with the tool that
reports it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from bench.data import DataConfig, ImageDataset, load_dataset
from bench.run import sync
from priors.autoregressive import AutoregressivePrior, NaiveStepper, Stepper


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of fn(), the device synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


@torch.no_grad()
def forward_seconds(prior: AutoregressivePrior, codes: Tensor, labels: Tensor | None = None,
                    repeats: int = 3) -> float:
    """Fastest of `repeats` teacher-forced forwards of `codes`, after one untimed warm-up."""
    prior.logits(codes, labels)
    return min(timed(lambda: prior.logits(codes, labels), prior.device)[0]
               for _ in range(max(1, repeats)))


class _Enough(Exception):
    """Raised by `FirstPositions` to end a sampling loop early."""


class FirstPositions:
    """A stepper that ends the sampling loop (raises `_Enough`) once the first `m` raster
    positions are written: the naive path timed on part of the grid."""

    def __init__(self, stepper: Stepper, m: int, w: int) -> None:
        self.stepper, self.m, self.w = stepper, m, w

    def logits_at(self, i: int, j: int) -> Tensor:
        return self.stepper.logits_at(i, j)

    def write(self, i: int, j: int, codes: Tensor) -> None:
        self.stepper.write(i, j, codes)
        if i * self.w + j + 1 >= self.m:
            raise _Enough


@torch.no_grad()
def naive_first_positions(prior: AutoregressivePrior, n: int, m: int,
                          generator: torch.Generator, labels: Tensor | None) -> Tensor:
    """(n, h, w): the first m raster positions sampled naively (one full forward each), the
    same draws as `prior.sample`; the other positions stay 0."""
    codes = torch.zeros(n, *prior.grid, dtype=torch.int64, device=prior.device)
    prior.net.eval()
    stepper = FirstPositions(NaiveStepper(prior.net, codes, labels), m, prior.grid[1])
    try:
        prior._sample_loop(stepper, codes, generator)
    except _Enough:
        pass
    return codes


def sampling_speed(prior: AutoregressivePrior, n: int = 1, *, seed: int = 0,
                   labels: Tensor | None = None,
                   naive_positions: int | None = None, repeats: int = 1,
                   repeat_budget_s: float = math.inf) -> dict[str, float]:
    """Cached vs naive sampling of n grids on the prior's grid and device (wall clock).

    The naive path costs one full forward per position, so it may be timed on the first
    `naive_positions` positions only and scaled to the grid (`naive_extrapolated` = 1).
    `cost_forward_equivalents`: cached sampling time / one teacher-forced forward of n grids.
    Cached sampling keeps its fastest of up to `repeats` runs (no new run starts once the runs
    so far took `repeat_budget_s`), the forward its fastest of 3.
    """
    n_pos = prior.grid[0] * prior.grid[1]
    m = n_pos if naive_positions is None else max(1, min(n_pos, naive_positions))
    gen = lambda: torch.Generator(prior.device).manual_seed(seed)  # noqa: E731
    labels = prior.check_labels(labels, n)
    runs: list[tuple[float, Tensor]] = []
    while not runs or (len(runs) < repeats and sum(r[0] for r in runs) < repeat_budget_s):
        runs.append(timed(lambda: prior.sample(n, generator=gen(), labels=labels), prior.device))
    cached_s, cached = min(runs, key=lambda r: r[0])
    naive_s, naive = timed(lambda: naive_first_positions(prior, n, m, gen(), labels),
                           prior.device)
    forward_s = forward_seconds(prior, cached, labels)
    naive_s *= n_pos / m
    same = torch.equal(cached.flatten(1)[:, :m], naive.flatten(1)[:, :m])
    return {"n": float(n), "h": float(prior.grid[0]), "w": float(prior.grid[1]),
            "cached_s": cached_s, "naive_s": naive_s, "speedup": naive_s / cached_s,
            "forward_s": forward_s, "cost_forward_equivalents": cached_s / forward_s,
            "naive_extrapolated": float(m < n_pos), "identical": float(same),
            "cached_runs": float(len(runs))}


def _read_all(ds: ImageDataset) -> None:
    """Touch every pixel of every split (pages the memmaps in)."""
    for split in ds.splits.values():
        np.asarray(split.images).sum(dtype=np.int64)


def measure_loading(spec: str, config: DataConfig, cache_dir: Path) -> dict:
    """Cold load (decode into a fresh cache folder under cache_dir, removed afterwards), then a
    warm load of the same cache and a full read of its pixels. Times in seconds."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".perf-", dir=cache_dir))
    cpu = torch.device("cpu")
    try:
        cold_s, ds = timed(lambda: load_dataset(spec, config, cache_dir=fresh), cpu)
        warm_s, ds = timed(lambda: load_dataset(spec, config, cache_dir=fresh), cpu)
        read_s = timed(lambda: _read_all(ds), cpu)[0]
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    n_images = sum(len(split) for split in ds.splits.values())
    return {"spec": spec, "kind": ds.kind, "fingerprint": ds.fingerprint,
            "resolution": config.resolution, "n_images": n_images,
            "cold_s": cold_s, "warm_s": warm_s, "warm_read_s": read_s,
            "cold_images_per_s": n_images / max(cold_s, 1e-9),
            "warm_images_per_s": n_images / max(warm_s + read_s, 1e-9)}
