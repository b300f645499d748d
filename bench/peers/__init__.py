"""Peer implementations of the backbone, raced against ours (`bench perf --peer NAME`).

A peer's third-party package is an optional extra, imported only when that peer is asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.peers.race import Contender, Recipe, ours, race
from bench.presets import Preset
from bench.stages import resolved_precision
from vqvae import VQVAEConfig

# name -> module with `require()` (BenchError saying how to install what is missing) and
# `build(cfg, *, seed) -> Contender` (a network sized like our backbone `cfg`)
PEERS = {"monai": "bench.peers.monai_vqvae"}


def peer_module(name: str) -> ModuleType:
    """The module of peer `name`, its optional dependencies checked (fails fast, one line)."""
    if name not in PEERS:
        raise BenchError(f"unknown peer {name!r}; available: {', '.join(PEERS)}")
    module = importlib.import_module(PEERS[name])
    module.require()
    return module


def build_peer(name: str, cfg: VQVAEConfig, *, seed: int) -> Contender:
    return peer_module(name).build(cfg, seed=seed)


def race_peer(name: str, preset: Preset, *, train_images: np.ndarray, test_images: np.ndarray,
              device: torch.device, budget_s: float, seed: int) -> dict[str, Any]:
    """Our backbone vs peer `name`, both at the preset's size, batch size and training
    precision (as resolved on `device`), each by its own recipe. A speed ratio is given only
    when neither contender is degenerate."""
    precision = resolved_precision("backbone", preset.train.precision, device)
    contenders = [ours(preset.vqvae, preset.train, seed=seed),
                  build_peer(name, preset.vqvae, seed=seed)]
    results = race(contenders, train_images=train_images, test_images=test_images,
                   batch_size=preset.train.batch_size, budget_s=budget_s, seed=seed,
                   device=device, precision=precision)
    ok = all(c["degenerate"] is None for c in results.values())
    return {"peer": name, "budget_s": budget_s, "batch_size": preset.train.batch_size,
            "resolution": preset.resolution, "precision": precision,
            "optimizer": "AdamW, warm-up + cosine decay over the budget, same batch order",
            "n_train_images": len(train_images), "n_test_images": len(test_images),
            "parameter_ratio": results[name]["n_parameters"] / results["ours"]["n_parameters"],
            "images_per_s_ratio": (results[name]["images_per_s"] / results["ours"]["images_per_s"]
                                   if ok else None),
            "contenders": results}


__all__ = ["PEERS", "Contender", "Recipe", "build_peer", "peer_module", "race",
           "race_peer"]
