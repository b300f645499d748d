"""`mni`: the embedded default. Seeded augmentations of axial slices of the MNI152 2009a T1
template that nilearn ships in its wheel, so the benchmark runs offline with no download.

Subject key = slice position. Blocks of consecutive slices go to one split each (neighbours
1 mm apart are near duplicates), so no slice, and no (slice, seed) pair, is in two splits.
Every image is a fresh draw of affine + elastic warp, bias field, gamma and Rician noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import SPLITS, DataConfig, Split
from bench.data.images import axial_view, brain_slices, square_resize
from bench.data.plan import Built, Kind, Plan, Progress
from bench.errors import DataError

BATCH = 256  # images augmented per grid_sample call
FIELD_SIDE = 32  # px, smooth random fields are made at this side, then upsampled


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths. Part of the cache key."""

    min_area_fraction: float = 0.5  # central band: slices with >= half the largest brain area
    block: int = 4  # consecutive slices kept in one split
    rotate_deg: float = 8.0  # uniform in +-
    scale: float = 0.08  # zoom uniform in 1 +-
    shift: float = 0.05  # translation uniform in +-, fraction of the half-width
    elastic: float = 0.012  # displacement std, fraction of the half-width
    elastic_grid: int = 5  # control points per side of the smooth displacement field
    bias: float = 0.15  # std of the log multiplicative bias field
    bias_grid: int = 3  # control points per side of the bias field
    log_gamma: float = 0.15  # std of log(gamma)
    noise: float = 0.03  # Rician noise sigma uniform in [0, noise], intensities in [0, 1]


AUGMENT = Augment()


def template_slices(resolution: int, augment: Augment = AUGMENT) -> tuple[np.ndarray, torch.Tensor]:
    """(z positions (S,), slices (S, 1, R, R) float32 in [0, 1]) of the template's brain band."""
    from nilearn.datasets import load_mni152_template  # slow import, only on a cache miss

    volume = np.asarray(load_mni152_template(resolution=1).get_fdata(), np.float32)  # RAS
    zs = brain_slices(volume, augment.min_area_fraction)
    slices = [square_resize(axial_view(volume, int(z)), resolution) for z in zs]
    return zs, torch.from_numpy(np.stack(slices))[:, None].clamp_(0, 1)


def assign_blocks(n_slices: int, sizes: tuple[int, int, int], seed: int,
                  block: int) -> dict[str, np.ndarray]:
    """Slice indices of each split: whole blocks, shares of blocks ~ shares of images, >= 1."""
    n_blocks = -(-n_slices // block)
    total = sum(sizes)
    val = max(1, round(n_blocks * sizes[1] / total))
    test = max(1, round(n_blocks * sizes[2] / total))
    if n_blocks - val - test < 1:
        raise DataError(f"mni: {n_slices} template slices make too few blocks for 3 splits")
    order = np.random.default_rng(seed).permutation(n_blocks)
    chosen = {"train": order[val + test:], "val": order[:val], "test": order[val:val + test]}
    return {name: np.concatenate([np.arange(b * block, min((b + 1) * block, n_slices))
                                  for b in np.sort(blocks)]) for name, blocks in chosen.items()}


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


def _generator(seed: int, split: str) -> torch.Generator:
    digest = hashlib.sha256(f"mni:{seed}:{split}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def generate_split(slices: torch.Tensor, allowed: np.ndarray, n: int, g: torch.Generator,
                   progress: Progress | None, a: Augment = AUGMENT) -> tuple[np.ndarray, np.ndarray]:
    """n augmented images drawn from the slices `allowed`: (images (n, R, R) uint8, slice idx)."""
    picks = torch.from_numpy(allowed)[torch.randint(len(allowed), (n,), generator=g)]
    out = np.empty((n, *slices.shape[-2:]), np.uint8)
    with torch.no_grad():
        for i in range(0, n, BATCH):
            batch = slices[picks[i:i + BATCH]]
            x = corrupt(warp(batch, g, a), g, a)[:, 0]  # (B, R, R) in [0, 1]
            out[i:i + len(batch)] = x.mul_(255).round_().to(torch.uint8).numpy()
            if progress is not None:
                progress.advance(len(batch))
    return out, picks.numpy()


def build(config: DataConfig, progress: Progress | None) -> Built:
    zs, slices = template_slices(config.resolution)
    allowed = assign_blocks(len(zs), config.mni_sizes, config.seed, AUGMENT.block)
    if progress is not None:
        progress.start("generating mni", sum(config.mni_sizes))
    splits = {}
    try:
        for name, n in zip(SPLITS, config.mni_sizes):
            images, picks = generate_split(slices, allowed[name], n, _generator(config.seed, name),
                                           progress)
            subjects = np.asarray([f"mni_z{int(zs[i]):03d}" for i in picks])
            splits[name] = Split(images, subjects)
    finally:
        if progress is not None:
            progress.stop()
    bands = ", ".join(f"{k} {len(v)}" for k, v in allowed.items())
    note = (f"mni: augmented axial slices z={zs.min()}..{zs.max()} of the MNI152 2009a template "
            f"(slices per split: {bands})")
    return Built(splits, (), (note,))


def plan(path: Path | None, config: DataConfig) -> Plan:
    import nilearn  # the template ships with it: its version identifies the source

    identity = {"template": "MNI152 2009a T1 1mm", "nilearn": nilearn.__version__,
                "augment": dataclasses.asdict(AUGMENT), "batch": BATCH}
    return Plan(identity, lambda progress: build(config, progress))


KIND = Kind("mni", takes_path=False, config_fields=("resolution", "seed", "mni_sizes"), plan=plan)
