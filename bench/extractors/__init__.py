"""Feature extractors for FD / KID / precision / recall: `build_extractor(name, ...)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError
from bench.extractors.base import FeatureExtractor

EXTRACTORS = ("mri", "inception")


def build_extractor(name: str, *, train_images: np.ndarray, cache_dir: Path, device: torch.device, seed: int,
                    preset: str = "quick", progress=None, weights_path: Path | None = None) -> FeatureExtractor:
    """A frozen extractor. `mri` trains (or loads from cache_dir) on train_images; `inception`
    needs torch-fidelity and its weights (weights_path or the torch hub cache)."""
    match name:
        case "mri":
            from bench.extractors.mri import build_mri
            return build_mri(train_images=train_images, cache_dir=cache_dir, device=device, seed=seed,
                             preset=preset, progress=progress)
        case "inception":
            from bench.extractors.inception import build_inception
            return build_inception(device=device, weights_path=weights_path)
    raise BenchError(f"unknown extractor {name!r}; available: {', '.join(EXTRACTORS)}")


__all__ = ["EXTRACTORS", "FeatureExtractor", "build_extractor"]
