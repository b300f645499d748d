"""Nearest-SSIM scores of samples: realism (NN-SSIM) and memorisation of training images.

Each is exact, equal to scoring every (sample, reference) pair with `image.ssim`, and found by
`nearest`'s bounded search, which scores far fewer pairs in full.
"""

from __future__ import annotations

from torch import Tensor

from bench.metrics.nearest import exceeds, nearest_quantile, nearest_ssim


def nn_ssim(samples: Tensor, reference: Tensor) -> Tensor:
    """(N,) float64 best SSIM of each sample against any reference image."""
    return nearest_ssim(samples, reference).values


def memorisation_threshold(train: Tensor, heldout: Tensor, *, quantile: float = 0.95) -> float:
    """The `quantile` of held-out real images' nearest-train SSIM: the line a sample must
    cross to count as memorised. Depends only on the data, so it is computed once per setting."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if len(heldout) == 0 or len(train) == 0:
        raise ValueError(f"train and heldout must be non-empty, got {len(train)}, {len(heldout)}")
    return nearest_quantile(heldout, train, quantile)


def memorised_share(samples: Tensor, train: Tensor, threshold: float) -> float:
    """Share of samples whose nearest-train SSIM is strictly above `threshold`."""
    if len(samples) == 0 or len(train) == 0:
        raise ValueError(f"samples and train must be non-empty, got {len(samples)}, {len(train)}")
    return float(exceeds(samples, train, threshold).double().mean())


def memorisation(samples: Tensor, train: Tensor, heldout: Tensor, *, quantile: float = 0.95) -> float:
    """Share of samples closer (SSIM) to their nearest training image than held-out data is.

    The threshold is the `quantile` of held-out images' nearest-train SSIM, so real held-out
    images score about 1 - quantile and copies of training images score 1.
    """
    if len(samples) == 0:
        raise ValueError(f"samples, train and heldout must be non-empty, got {len(samples)}, "
                         f"{len(train)}, {len(heldout)}")
    threshold = memorisation_threshold(train, heldout, quantile=quantile)
    return memorised_share(samples, train, threshold)


__all__ = ["nn_ssim", "memorisation_threshold", "memorised_share", "memorisation"]
