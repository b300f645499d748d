"""`bench perf` section "precision": training steps/s in fp32 and under bf16 autocast, side by
side, of the backbone (`train_vqvae`) and of network priors (`NetPrior.fit`), each running its
real loop for a few steps.

The two precisions run in alternation, round after round (the first round untimed: allocator,
thread pool, kernel choice), so that both meet the same changes of machine load; each keeps its
fastest run (slower ones are other processes' doing) and the speed-up is the ratio of the two.
The median of the per-round ratios is reported beside it. Throughput does not depend on the
weights or the data seen, so the priors train on random codes (the backbone on real images).
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable

import numpy as np
import torch

import priors
from bench.errors import BenchError
from bench.presets import Preset
from priors import CodeSet, NullProgress
from vqvae import VQVAE, TrainConfig, train_vqvae
from trainkit import native_bf16_cpu

MEASURED = ("fp32", "bf16")  # the precisions timed, in this order within a round

# one run of a contender: precision -> (units done: optimisation steps or grids, wall seconds)
Run = Callable[[str], tuple[float, float]]


def network_priors() -> list[str]:
    """Registered priors whose Config has a `precision` field (a loop that honours it)."""
    return [name for name in priors.available_priors()
            if "precision" in {f.name for f in dataclasses.fields(priors.get_prior(name).Config)}]


def check_prior_names(names: tuple[str, ...]) -> None:
    """ValueError naming a prior that is unknown or has no precision field."""
    valid = network_priors()
    for name in names:
        if name not in valid:
            raise ValueError(f"precision_priors must name network priors ({', '.join(valid)}), "
                             f"got {name!r}")


def backbone_run(preset: Preset, images: np.ndarray, device: torch.device, steps: int,
                 seed: int) -> Run:
    """`train_vqvae` for `steps` steps of the preset's batch at a given precision."""
    bs = preset.train.batch_size
    if len(images) < steps * bs:
        raise BenchError(f"the precision section needs {steps * bs} training images for "
                         f"{steps} backbone steps, the dataset has {len(images)}")
    model = VQVAE(preset.vqvae)

    def run(precision: str) -> tuple[float, float]:
        cfg = TrainConfig(epochs=1, batch_size=bs, lr=preset.train.lr, seed=seed,
                          precision=precision)
        out = train_vqvae(model, images[:steps * bs], cfg, device=device, progress=NullProgress())
        return out["steps"], out["train_wall_s"]

    return run


def prior_run(name: str, preset: Preset, device: torch.device, steps: int, seed: int) -> Run:
    """`fit` of prior `name` (the preset's config) for `steps` steps on random codes."""
    cls = priors.get_prior(name)
    base = preset.prior_config(cls)
    K, side = preset.vqvae.num_codes, preset.grid
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (steps * base.batch_size + 2, side, side), generator=g)
    train, val = CodeSet(codes[:-2], K), CodeSet(codes[-2:], K)

    def run(precision: str) -> tuple[float, float]:
        cfg = dataclasses.replace(base, precision=precision, epochs=1, max_steps=steps)
        prior = cls(cfg, num_codes=K, grid=(side, side), device=device)
        out = prior.fit(train, val, seed=seed, progress=NullProgress())
        return out["steps"], out["train_wall_s"]

    return run


def interleaved(run: Run, rounds: int, *, precisions: tuple[str, ...] = MEASURED,
                unit: str = "steps") -> dict[str, Any]:
    """`unit`s/s of `run` at each precision over `rounds` timed rounds (after one untimed): the
    best run of each (as timeit: slower runs are other processes' doing) and, with bf16 among
    them, their ratio and the median of the per-round bf16 / fp32 ratios."""
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    for i in range(rounds + 1):
        for precision in precisions:
            count, wall_s = run(precision)
            if i:
                rates[precision].append(count / wall_s)
    out = {unit: count, "rounds": rounds,
           **{f"{p}_{unit}_per_s": max(r) for p, r in rates.items()},
           **{f"{p}_runs_{unit}_per_s": r for p, r in rates.items()}}
    if "bf16" not in rates:
        return out
    ratios = [b / f for f, b in zip(rates["fp32"], rates["bf16"])]
    return out | {"bf16_speedup": max(rates["bf16"]) / max(rates["fp32"]),
                  "bf16_speedup_median_of_rounds": statistics.median(ratios),
                  "bf16_speedup_runs": ratios}


def measure_precision(preset: Preset, images: np.ndarray, device: torch.device, *, steps: int,
                      rounds: int, prior_names: tuple[str, ...], seed: int) -> dict[str, Any]:
    """fp32 vs bf16 training throughput of the backbone and of each prior in `prior_names`."""
    head = {"steps_per_run": steps, "rounds": rounds, "resolution": preset.resolution,
            "grid": preset.grid, "backbone_batch_size": preset.train.batch_size}
    if device.type == "cpu" and not native_bf16_cpu():
        return head | {"bf16_native": False, "note": "this CPU has no native bf16 (AVX512-BF16 "
                       "or AMX): bf16 is not measured, auto trains in fp32"}
    rows = {"backbone": interleaved(backbone_run(preset, images, device, steps, seed), rounds)}
    for name in prior_names:
        rows[name] = interleaved(prior_run(name, preset, device, steps, seed), rounds) | {
            "batch_size": preset.prior_config(priors.get_prior(name)).batch_size}
    rows["backbone"]["batch_size"] = preset.train.batch_size
    return head | {"bf16_native": True, "contenders": rows}
