"""Image-space metrics: SSIM, PSNR, all-pairs SSIM, diversity (nearest-SSIM scores: `nearest`).

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


def gaussian_taps() -> Tensor:
    """(WIN,) float64 normalised Gaussian window (sums to one)."""
    taps = torch.exp(-0.5 * ((torch.arange(WIN, dtype=torch.float64) - WIN // 2) / SIGMA) ** 2)
    return taps / taps.sum()


def _band(n: int, dtype: torch.dtype, device: torch.device, taps: Tensor | None = None) -> Tensor:
    """(n - WIN + 1, n) matrix whose rows apply `taps` (default the Gaussian window), 'valid'."""
    taps = gaussian_taps() if taps is None else taps
    band = torch.zeros(n - WIN + 1, n, dtype=torch.float64)
    for i in range(n - WIN + 1):
        band[i, i:i + WIN] = taps
    return band.to(device, dtype)


class _Filter:
    """Separable Gaussian filter as two dense matmuls: far faster on CPU than conv2d."""

    def __init__(self, like: Tensor) -> None:  # filters images shaped, typed and placed like `like`
        (h, w), dtype, dev = like.shape[-2:], like.dtype, like.device
        self.rows, self.cols_t = _band(h, dtype, dev), _band(w, dtype, dev).T.contiguous()

    def __call__(self, z: Tensor) -> Tensor:  # (..., H, W) -> (..., H-10, W-10)
        return self.rows @ (z @ self.cols_t)


def _stats(x: Tensor, filt: _Filter) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image maps (N, H-10, W-10): mu, l = (mu^2 + C1/2)/2 and v = (var + C2/2)/2.

    Split this way, every pairwise term of SSIM is a single broadcast op:
    SSIM = (2 mu_x mu_y + C1)(2 cov + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))
         = (mu_x mu_y + C1/2)(cov + C2/2) / ((l_x + l_y)(v_x + v_y)).
    """
    mu = filt(x[:, 0])
    sq = mu**2
    return mu, (sq + C1 / 2) / 2, filt(x[:, 0] ** 2).sub_(sq).add_(C2 / 2).div_(2)


def _cross(xa: Tensor, xb: Tensor, filt: _Filter) -> Tensor:
    """Filtered E[x y] + (C1 + C2)/2 for broadcast pairs: the Gaussian window sums to one, so
    the constant rides along in the product pass for free."""
    return filt(torch.addcmul(torch.tensor((C1 + C2) / 2, dtype=xa.dtype, device=xa.device), xa, xb))


def _mean_ssim(cross: Tensor, a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Mean SSIM over the map from `_cross` output (consumed in place) and broadcastable `_stats`."""
    (mu_a, lum_a, var_a), (mu_b, lum_b, var_b) = a, b
    m = torch.addcmul(torch.tensor(C1 / 2, dtype=mu_a.dtype, device=mu_a.device), mu_a, mu_b)
    num = cross.sub_(m).mul_(m)  # (mu mu + C1/2)(cov + C2/2)
    den = (lum_a + lum_b).mul_(var_a + var_b)
    return num.div_(den).flatten(-2).mean(-1)


def ssim(x: Tensor, y: Tensor, *, batch: int = 512) -> Tensor:
    """(N,) SSIM of each pair x[i], y[i], computed in float64, `batch` pairs at a time."""
    _check_pair(x, y)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    filt = _Filter(x[:1].double())
    out = []
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].double(), y[i:i + batch].double()
        out.append(_mean_ssim(_cross(xb[:, 0], yb[:, 0], filt), _stats(xb, filt), _stats(yb, filt)))
    return torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """(N,) peak signal-to-noise ratio in dB for data range 1; inf for identical images."""
    _check_pair(x, y)
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def ssim_matrix(a: Tensor, b: Tensor, *, batch: int | None = None) -> Tensor:
    """(Na, Nb) SSIM of every pair (a[i], b[j]), float32 inside, on the images' device.

    Local means and variances are filtered once per image; each pair then costs only the
    filtered cross term. `batch` pairs are held at once (None: 2048 at 64 px, 32 MB buffers);
    large blocks also keep OpenMP threads from idling at barriers on a busy CPU.
    """
    check_images(a, "a")
    check_images(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a and b must have the same image shape, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    if batch is None:
        batch = max(1, 2**23 // (a.shape[-2] * a.shape[-1]))
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    a, b = a.float(), b.float()
    filt = _Filter(a[:1])
    stats_a, stats_b = _stats(a, filt), _stats(b, filt)  # each 3 x (N, h, w)
    out = torch.empty(len(a), len(b), device=a.device)
    step_a = max(1, min(len(a), batch))
    step_b = max(1, batch // step_a)
    for i in range(0, len(a), step_a):
        for j in range(0, len(b), step_b):
            ia, jb = slice(i, i + step_a), slice(j, j + step_b)
            out[ia, jb] = _mean_ssim(_cross(a[ia, None, 0], b[None, jb, 0], filt),  # (na, nb, h, w)
                                     tuple(t[ia, None] for t in stats_a), tuple(t[None, jb] for t in stats_b))
    return out


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
    scores = torch.cat([ssim(samples[i[k:k + 512]], samples[j[k:k + 512]]) for k in range(0, len(i), 512)])
    return float(scores.mean())


__all__ = ["ssim", "psnr", "ssim_matrix", "diversity"]


def spread_ratios(recon: Tensor, x: Tensor) -> dict[str, float]:
    """How much reconstructions vary, as a share of how much the originals do:
    within_image = mean per-image pixel std of recon / that of x (0: every reconstruction is
    flat); across_images = mean per-pixel std over the images of recon / that of x (0: every
    image is reconstructed as the same image). 1 for recon == x; inf when x itself is flat."""
    _check_pair(recon, x)
    if len(x) < 2:
        raise ValueError(f"spread_ratios needs at least 2 images, got {len(x)}")
    r, o = recon.double().flatten(1), x.double().flatten(1)  # (N, H*W)

    def ratio(a: Tensor, b: Tensor) -> float:
        return float(a.mean() / b.mean()) if float(b.mean()) > 0 else float("inf")

    return {"within_image": ratio(r.std(1, correction=0), o.std(1, correction=0)),
            "across_images": ratio(r.std(0, correction=0), o.std(0, correction=0))}


MIN_SPREAD = 0.2  # reconstructions varying less than this share of the data's: degenerate
MIN_CODES = 2  # this many distinct codes or fewer over the test images: a degenerate codebook


def degenerate_reconstruction(spread: dict[str, float], codes_used: int) -> str:
    """Why a backbone's test reconstructions are degenerate ("" when they are not): `spread`
    from `spread_ratios` (within each image, across images) against MIN_SPREAD, and the distinct
    codes over the test images against MIN_CODES. A collapsed decoder (seen at 128 px: one
    near-constant image for every input, recon SSIM 0.64) gives spreads near 0."""
    reasons = [f"{name.replace('_', ' ')} spread {value:.3g} of the data's"
               for name, value in spread.items() if value < MIN_SPREAD]
    if codes_used <= MIN_CODES:
        reasons.append(f"{codes_used} code(s) used")
    return "; ".join(reasons)
