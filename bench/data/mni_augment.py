"""The torch half of `mni`: synthetic subjects resliced from the template by 3-D grid_sample.

Coordinates are mm from the template's centre, axes (x = image column, y = image row, z = axial
level). A subject's output voxel p reads the template at c + M (p - c) + t + u(p): M a rotation
and zoom about the band's centre c, t an in-plane shift, u a smooth displacement. Bias field,
gamma and Rician noise follow as element-wise ops. Each subject draws from its own generator;
rendering goes in batches of subjects. Kept apart so that loading a cached dataset never
imports torch.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.mni import Augment, Template
from bench.data.plan import Progress

RENDER_PIXELS = 1 << 20  # output pixels per grid_sample call: bounds memory (tens of MB)


def seeded_generator(key: str) -> torch.Generator:
    """A torch generator seeded from a string, the same on every machine."""
    digest = hashlib.sha256(key.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def _uniform(g: torch.Generator, n: int, half: float) -> torch.Tensor:
    return (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * half


def rbf_basis(t: torch.Tensor, points: int) -> torch.Tensor:
    """(n,) positions in [-1, 1] -> (n, points) Gaussian bumps at evenly spaced control points,
    one spacing wide, each row scaled to unit norm: a field sum_i c_i B_i(t) with c ~ N(0, 1)
    then has std 1 at every position."""
    centres = torch.linspace(-1, 1, points, dtype=torch.float64)
    width = 2 / (points - 1) if points > 1 else 2.0
    b = torch.exp(-0.5 * ((t[:, None] - centres[None]) / width) ** 2)
    return b / b.norm(dim=1, keepdim=True)


def smooth_field(coef: torch.Tensor, z: torch.Tensor, r: int) -> torch.Tensor:
    """A smooth field per image from control coefficients coef (n, C, P, P, P) at the image's
    level z (n,) in [-1, 1], on its R x R pixel grid: (n, C, R, R) float32, unit std for N(0, 1)
    coefficients."""
    points = coef.shape[-1]
    b_xy = rbf_basis(pixel_centres(r), points).float()  # (R, P)
    at_level = torch.einsum("ncijk,ni->ncjk", coef, rbf_basis(z, points)).float()  # (n, C, P, P)
    return b_xy @ at_level @ b_xy.T  # rows j = y, columns k = x


def pixel_centres(r: int) -> torch.Tensor:
    """(R,) pixel centres in grid_sample's [-1, 1] (align_corners=False)."""
    return (torch.arange(r, dtype=torch.float64) * 2 + 1) / r - 1


def rotation(g: torch.Generator, a: Augment) -> torch.Tensor:
    """(3, 3): about z (in-plane) by +-rotate_deg, then tilts about x and y by +-tilt_deg."""
    angles = torch.cat([_uniform(g, 1, math.radians(a.rotate_deg)),
                        _uniform(g, 2, math.radians(a.tilt_deg))]).tolist()
    out = torch.eye(3, dtype=torch.float64)
    for axis, angle in zip((2, 0, 1), angles):
        i, j = [k for k in range(3) if k != axis]
        m = torch.eye(3, dtype=torch.float64)
        m[i, i] = m[j, j] = math.cos(angle)
        m[i, j], m[j, i] = -math.sin(angle), math.sin(angle)
        out = out @ m
    return out


@dataclass(frozen=True)
class Subject:
    """One subject's random draws, all from its own generator (noise comes last, from `rng`)."""

    levels: torch.Tensor  # (k,) float64 template z of its slices: one per equal stratum, ascending
    matrix: torch.Tensor  # (3, 3) float64 rotation and per-axis zoom, about the band's centre
    shift: torch.Tensor  # (3,) float64 mm, in-plane
    elastic: torch.Tensor  # (3, P, P, P) float64 N(0, 1) control coefficients of the displacement
    bias: torch.Tensor  # (1, Pb, Pb, Pb) float64 N(0, 1) control coefficients of the log bias
    gamma: float
    sigma: float  # Rician noise level
    rng: torch.Generator  # what is left of the subject's generator: its noise


def draw_subject(t: Template, k: int, g: torch.Generator, a: Augment) -> Subject:
    """Everything random about a subject of k images, in a fixed order from g."""
    lo, hi = t.band[0] - 0.5, t.band[1] + 0.5
    f64 = torch.float64
    stratum = torch.arange(k, dtype=f64) + torch.rand(k, generator=g, dtype=f64)
    levels = lo + stratum * (hi - lo) / k
    zoom = (1 + _uniform(g, 1, a.scale)) * (1 + _uniform(g, 3, a.aspect))
    matrix = rotation(g, a) / zoom[None, :]
    shift = torch.cat([_uniform(g, 2, a.shift * t.side_mm / 2), torch.zeros(1, dtype=f64)])
    elastic = torch.randn(3, *(a.elastic_grid,) * 3, generator=g, dtype=f64)
    bias = torch.randn(1, *(a.bias_grid,) * 3, generator=g, dtype=f64)
    gamma = float(torch.exp(a.log_gamma * torch.randn(1, generator=g, dtype=f64)))
    sigma = a.noise * float(torch.rand(1, generator=g, dtype=f64))
    return Subject(levels, matrix, shift, elastic, bias, gamma, sigma, g)


@dataclass(frozen=True)
class Batch:
    """The draws of several subjects, one row per image."""

    levels: torch.Tensor  # (n,) float64 template z
    z: torch.Tensor  # (n,) float64 level in the band, in [-1, 1]
    subjects: list[Subject]
    index: torch.Tensor  # (n,) the subject of each image

    @staticmethod
    def of(t: Template, subjects: list[Subject]) -> "Batch":
        levels = torch.cat([s.levels for s in subjects])
        centre, half_band = (t.band[0] + t.band[1]) / 2, max((t.band[1] - t.band[0]) / 2, 1.0)
        counts = torch.tensor([len(s.levels) for s in subjects])
        index = torch.repeat_interleave(torch.arange(len(subjects)), counts)
        return Batch(levels, (levels - centre) / half_band, subjects, index)

    def per_image(self, field: str) -> torch.Tensor:
        """A subject field repeated for each of its images: (n, ...)."""
        return torch.stack([getattr(s, field) for s in self.subjects])[self.index]

    def scalar(self, field: str) -> torch.Tensor:
        """(n, 1, 1) float32 of a scalar subject field."""
        return torch.tensor([getattr(s, field) for s in self.subjects])[self.index, None, None]


def sample_grid(t: Template, b: Batch, a: Augment) -> torch.Tensor:
    """Where each output pixel reads the template: (n, R, R, 3) float32 in grid_sample's
    normalised (x, y, z), for every image of the batch in order."""
    depth, r = t.stack.shape[0], t.stack.shape[-1]
    half = t.side_mm / 2
    centre = (t.band[0] + t.band[1]) / 2
    pixel = pixel_centres(r).float() * half
    p = torch.stack(torch.broadcast_tensors(pixel[None, None, :], pixel[None, :, None],
                                            (b.levels - centre).float()[:, None, None]), -1)
    q = torch.einsum("nyxj,nij->nyxi", p, b.per_image("matrix").float())  # (n, R, R, 3)
    q += b.per_image("shift").float()[:, None, None]
    q += a.elastic_mm * smooth_field(b.per_image("elastic"), b.z, r).permute(0, 2, 3, 1)
    q[..., 2] += centre + 0.5 - depth / 2  # template z index -> mm from the volume's centre
    return q / torch.tensor([half, half, depth / 2])


def render(t: Template, subjects: list[Subject], a: Augment) -> np.ndarray:
    """The images of `subjects`, in order: (n, R, R) uint8."""
    b = Batch.of(t, subjects)
    source = torch.from_numpy(t.stack)[None, None]  # (1, 1, Z, R, R)
    x = F.grid_sample(source, sample_grid(t, b, a)[None], mode="bilinear", padding_mode="zeros",
                      align_corners=False)[0, 0]  # (n, R, R)
    log_bias = smooth_field(b.per_image("bias"), b.z, x.shape[-1])[:, 0]
    x = x.mul_(log_bias.mul_(a.bias).exp_()).clamp_(0, 1).pow_(b.scalar("gamma"))
    noise = torch.empty(len(x), 2, *x.shape[1:])  # (n, 2, R, R): real, imaginary
    for s, rows in zip(subjects, torch.split(noise, [len(s.levels) for s in subjects])):
        torch.randn(rows.shape, generator=s.rng, out=rows)
    noise.mul_(b.scalar("sigma")[:, None])
    x = x.add_(noise[:, 0]).square_().add_(noise[:, 1].square_()).sqrt_().clamp_(0, 1)
    return x.mul_(255).round_().to(torch.uint8).numpy()


def render_split(t: Template, subjects: list[tuple[str, int]], seed: int, a: Augment,
                 progress: Progress | None) -> np.ndarray:
    """(n, R, R) uint8: the images of each (subject id, image count), subject by subject. Each
    subject draws from a generator seeded by (seed, id) alone; rendering goes in batches."""
    per_image = t.stack.shape[1] * t.stack.shape[2]
    out, batch, pending = [], [], 0
    for i, (sid, k) in enumerate(subjects):
        batch.append(draw_subject(t, k, seeded_generator(f"mni:{seed}:{sid}"), a))
        pending += k
        if (pending + k) * per_image > RENDER_PIXELS or i == len(subjects) - 1:
            out.append(render(t, batch, a))
            if progress is not None:
                progress.advance(pending)
            batch, pending = [], 0
    return np.concatenate(out)
