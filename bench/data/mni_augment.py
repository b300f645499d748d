"""The torch half of `mni`: batched, seeded augmentation of template slices.

One grid_sample per batch does the affine and elastic warp; bias field, gamma and Rician noise
follow as element-wise ops. Kept apart so that loading a cached dataset never imports torch.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.mni import Augment
from bench.data.plan import Progress

FIELD_SIDE = 32  # px, smooth random fields are made at this side, then upsampled


def _uniform(g: torch.Generator, n: int, half: float) -> torch.Tensor:
    return (torch.rand(n, generator=g) * 2 - 1) * half


def _smooth(g: torch.Generator, shape: tuple[int, ...], grid: int, size: int) -> torch.Tensor:
    """Smooth random fields: Gaussian control points, bicubic upsampling. (B, C, size, size)"""
    points = torch.randn(*shape, grid, grid, generator=g)
    coarse = F.interpolate(points, size=(FIELD_SIDE, FIELD_SIDE), mode="bicubic",
                           align_corners=True)  # bicubic where it is cheap, bilinear up to size
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)


def warp(x: torch.Tensor, g: torch.Generator, a: Augment) -> torch.Tensor:
    """Random affine + elastic warp of a batch x (B, 1, R, R) in one grid_sample."""
    b, _, r, _ = x.shape
    angle = _uniform(g, b, np.deg2rad(a.rotate_deg))
    zoom = 1 + _uniform(g, b, a.scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = _uniform(g, 2 * b, a.shift).view(b, 2)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, r, r], align_corners=False)  # (B, R, R, 2)
    grid = grid + a.elastic * _smooth(g, (b, 2), a.elastic_grid, r).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def corrupt(x: torch.Tensor, g: torch.Generator, a: Augment) -> torch.Tensor:
    """Bias field, gamma and Rician noise on a batch x (B, 1, R, R) in [0, 1]."""
    b, _, r, _ = x.shape
    x = x.mul_(torch.exp_(a.bias * _smooth(g, (b, 1), a.bias_grid, r))).clamp_(0, 1)
    x = x.pow_(torch.exp(a.log_gamma * torch.randn(b, 1, 1, 1, generator=g)))
    sigma = a.noise * torch.rand(b, 1, 1, 1, generator=g)
    real = x.add_(torch.randn(x.shape, generator=g).mul_(sigma)).square_()
    imag = torch.randn(x.shape, generator=g).mul_(sigma).square_()
    return real.add_(imag).sqrt_().clamp_(0, 1)


def seeded_generator(key: str) -> torch.Generator:
    """A torch generator seeded from a string, the same on every machine."""
    digest = hashlib.sha256(key.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def generate_split(slices: np.ndarray, allowed: np.ndarray, n: int, g: torch.Generator,
                   a: Augment, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """n augmented images of slices (S, R, R) drawn from those `allowed`:
    (images (n, R, R) uint8, slice index of each)."""
    picks = torch.from_numpy(allowed)[torch.randint(len(allowed), (n,), generator=g)]
    source = torch.from_numpy(np.ascontiguousarray(slices, np.float32))[:, None]  # (S, 1, R, R)
    out = np.empty((n, *slices.shape[-2:]), np.uint8)
    with torch.no_grad():
        for i in range(0, n, a.batch):
            batch = source[picks[i:i + a.batch]]
            x = corrupt(warp(batch, g, a), g, a)[:, 0]  # (B, R, R) in [0, 1]
            out[i:i + len(batch)] = x.mul_(255).round_().to(torch.uint8).numpy()
            if progress is not None:
                progress.advance(len(batch))
    return out, picks.numpy()
