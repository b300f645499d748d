"""The feature-extractor interface shared by FD / KID / precision / recall."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor

from bench.metrics.image import check_images

MIN_SIDE = 16  # px: four stride-2 stages of the mri encoder still leave one pixel


class FeatureExtractor(ABC):
    """A frozen image encoder: (N, 1, H, W) images in [0, 1] -> (N, dim) float64 features."""

    name: str  # "mri", "inception"
    id: str  # content hash of the weights: which features a score was computed on
    dim: int  # feature width
    device: torch.device

    @abstractmethod
    def _embed(self, x: Tensor) -> Tensor:
        """(b, dim) features of one batch (b, 1, H, W) in [0, 1], already on self.device."""

    @torch.no_grad()
    def features(self, x: Tensor, *, batch: int = 256) -> np.ndarray:
        """(N, dim) float64 features of images x (N, 1, H, W) float in [0, 1]."""
        check_images(x, "x", MIN_SIDE)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        out = [self._embed(x[i:i + batch].to(self.device)).double().cpu() for i in range(0, len(x), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))
