"""MRI-plausible augmentations for contrastive training: geometry and intensity, no colour.

Every random draw comes from the `generator` argument, so a seed fixes the views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def random_affine(x: Tensor, g: torch.Generator) -> Tensor:
    """Small rotation (+-10 deg), scale (0.85-1.15), shift (+-8 %) and left-right flip."""
    n, dev = len(x), x.device
    angle = _uniform(n, -math.pi / 18, math.pi / 18, g, dev)
    scale = _uniform(n, 0.85, 1.15, g, dev)
    flip = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, _uniform(n, -0.08, 0.08, g, dev)], 1),
                         torch.stack([sin * flip, cos, _uniform(n, -0.08, 0.08, g, dev)], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_intensity(x: Tensor, g: torch.Generator) -> Tensor:
    """Gamma, a smooth multiplicative bias field, contrast about the mean and Gaussian noise."""
    n, dev = len(x), x.device
    gamma = torch.exp(_uniform(n, math.log(0.7), math.log(1.4), g, dev)).view(n, 1, 1, 1)
    x = x.clamp_min(0) ** gamma
    coarse = torch.randn(n, 1, 4, 4, generator=g, device=dev)  # bias field: 4x4 knots, bicubic
    field = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=True)
    x = x * torch.exp(_uniform(n, 0.0, 0.25, g, dev).view(n, 1, 1, 1) * field)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(n, 0.75, 1.25, g, dev).view(n, 1, 1, 1) + mean
    x = x + _uniform(n, 0.0, 0.02, g, dev).view(n, 1, 1, 1) * torch.randn(x.shape, generator=g, device=dev)
    return x.clamp(0, 1)


def two_views(x: Tensor, g: torch.Generator) -> Tensor:
    """(2n, 1, H, W): two independent augmentations of each image, stacked."""
    both = torch.cat([x, x])
    return random_intensity(random_affine(both, g), g)
