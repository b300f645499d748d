"""Image-space metrics: SSIM, PSNR, nearest-neighbour SSIM, memorisation, diversity.

Images are (N, 1, H, W) float tensors in [0, 1]. SSIM uses an 11-tap Gaussian window
(sigma 1.5), data range 1, (K1, K2) = (0.01, 0.03), population covariances and the mean
over the valid (unpadded) region, which is what
`skimage.metrics.structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)` computes.
"""

from __future__ import annotations

import torch
from torch import Tensor

SIGMA = 1.5  # px, Gaussian window
WIN = 11  # taps: skimage's truncate=3.5 at sigma 1.5 gives radius 5
C1 = 0.01**2  # (K1 * data range)^2
C2 = 0.03**2  # (K2 * data range)^2


def check_images(x: Tensor, name: str = "x", min_side: int = WIN) -> None:
    """ValueError unless x is (N, 1, H, W) float in [0, 1] with both sides >= min_side."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    if min(x.shape[-2:]) < min_side:
        raise ValueError(f"{name} must be at least {min_side}x{min_side} px, got {tuple(x.shape[-2:])}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")


def _check_pair(x: Tensor, y: Tensor) -> None:
    check_images(x, "x")
    check_images(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def _band(n: int, dtype: torch.dtype) -> Tensor:
    """(n - WIN + 1, n) matrix whose rows apply the normalised Gaussian window ('valid')."""
    taps = torch.exp(-0.5 * ((torch.arange(WIN, dtype=torch.float64) - WIN // 2) / SIGMA) ** 2)
    taps /= taps.sum()
    band = torch.zeros(n - WIN + 1, n, dtype=torch.float64)
    for i in range(n - WIN + 1):
        band[i, i:i + WIN] = taps
    return band.to(dtype)


class _Filter:
    """Separable Gaussian filter as two dense matmuls: far faster on CPU than conv2d."""

    def __init__(self, h: int, w: int, dtype: torch.dtype) -> None:
        self.rows, self.cols_t = _band(h, dtype), _band(w, dtype).T.contiguous()

    def __call__(self, z: Tensor) -> Tensor:  # (..., H, W) -> (..., H-10, W-10)
        return self.rows @ (z @ self.cols_t)


def _stats(x: Tensor, filt: _Filter) -> tuple[Tensor, Tensor]:
    """Per-image local mean and variance maps, each (N, H-10, W-10)."""
    mu = filt(x[:, 0])
    return mu, filt(x[:, 0] ** 2) - mu**2


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """(N,) SSIM of each pair x[i], y[i], computed in float64."""
    _check_pair(x, y)
    x, y = x.double(), y.double()
    filt = _Filter(*x.shape[-2:], torch.float64)
    (mu_x, var_x), (mu_y, var_y) = _stats(x, filt), _stats(y, filt)
    cov = filt(x[:, 0] * y[:, 0]) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return s.flatten(1).mean(1)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """(N,) peak signal-to-noise ratio in dB for data range 1; inf for identical images."""
    _check_pair(x, y)
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def ssim_matrix(a: Tensor, b: Tensor, *, batch: int = 2048) -> Tensor:
    """(Na, Nb) SSIM of every pair (a[i], b[j]), float32 inside.

    Local means and variances are filtered once per image; each pair then costs only the
    filtered cross term. `batch` bounds the pairs held in memory at once (~50 kB each at 64 px).
    """
    check_images(a, "a")
    check_images(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a and b must have the same image shape, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    filt = _Filter(*a.shape[-2:], torch.float32)
    a, b = a.float(), b.float()
    (mu_a, var_a), (mu_b, var_b) = _stats(a, filt), _stats(b, filt)  # (N, h, w)
    out = torch.empty(len(a), len(b))
    step_a = max(1, min(len(a), batch))
    step_b = max(1, batch // step_a)
    for i in range(0, len(a), step_a):
        for j in range(0, len(b), step_b):
            ia, jb = slice(i, i + step_a), slice(j, j + step_b)
            out[ia, jb] = _pair_block(a[ia, 0], b[jb, 0], mu_a[ia], var_a[ia], mu_b[jb], var_b[jb], filt)
    return out


def _pair_block(xa: Tensor, xb: Tensor, mu_a: Tensor, var_a: Tensor, mu_b: Tensor, var_b: Tensor,
                filt: _Filter) -> Tensor:
    """(na, nb) mean SSIM for one block of pairs; in-place ops keep memory to a few blocks."""
    s = filt(xa[:, None] * xb[None])  # (na, nb, h, w) filtered cross term E[xy]
    m = mu_a[:, None] * mu_b[None]  # (na, nb, h, w)
    s.sub_(m).mul_(2).add_(C2).mul_(m.mul_(2).add_(C1))  # numerator
    den = (mu_a**2)[:, None] + (mu_b**2)[None]
    den.add_(C1).mul_(var_a[:, None] + var_b[None] + C2)
    return s.div_(den).flatten(2).mean(2)


def nn_ssim(samples: Tensor, reference: Tensor, *, batch: int = 2048) -> Tensor:
    """(N,) best SSIM of each sample against any reference image."""
    return ssim_matrix(samples, reference, batch=batch).max(dim=1).values


def memorisation(samples: Tensor, train: Tensor, heldout: Tensor, *, quantile: float = 0.95,
                 batch: int = 2048) -> float:
    """Share of samples closer (SSIM) to their nearest training image than held-out data is.

    The threshold is the `quantile` of held-out images' nearest-train SSIM, so real held-out
    images score about 1 - quantile and copies of training images score 1.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if len(samples) == 0 or len(heldout) == 0 or len(train) == 0:
        raise ValueError(f"samples, train and heldout must be non-empty, got {len(samples)}, "
                         f"{len(train)}, {len(heldout)}")
    threshold = torch.quantile(nn_ssim(heldout, train, batch=batch).double(), quantile)
    return float((nn_ssim(samples, train, batch=batch) > threshold).double().mean())


def diversity(samples: Tensor, *, max_pairs: int = 10_000, generator: torch.Generator | None = None) -> float:
    """Mean SSIM over distinct pairs of samples (lower = more diverse).

    All pairs when there are at most `max_pairs`, else `max_pairs` pairs drawn with `generator`.
    """
    n = len(samples)
    if n < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {n}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    if n * (n - 1) // 2 <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
    else:
        i = torch.randint(0, n, (max_pairs,), generator=generator)
        j = (i + torch.randint(1, n, (max_pairs,), generator=generator)) % n  # j != i
    scores = torch.cat([ssim(samples[i[k:k + 4096]], samples[j[k:k + 4096]]) for k in range(0, len(i), 4096)])
    return float(scores.mean())


__all__ = ["ssim", "psnr", "ssim_matrix", "nn_ssim", "memorisation", "diversity"]
