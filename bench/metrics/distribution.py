"""Distribution metrics on feature matrices (N, d): Frechet distance, KID, precision/recall.

Inputs may be numpy arrays or torch tensors; everything is computed in float64 numpy.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _as_features(x: np.ndarray | Tensor, name: str, min_rows: int = 2) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, d) feature matrix, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf features")
    return x


def _as_pair(a, b, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_features(a, "a", min_rows), _as_features(b, "b", min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same feature dim, got {a.shape[1]} and {b.shape[1]}")
    return a, b


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; tiny negative eigenvalues (round-off) become 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians fitted to a and b.

    tr((S_a S_b)^1/2) is the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S_a^1/2 S_b S_a^1/2 (same spectrum), which avoids sqrtm's complex round-off.
    """
    a, b = _as_pair(a, b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    root_a = _psd_sqrt(np.atleast_2d(s_a))
    m = root_a @ np.atleast_2d(s_b) @ root_a
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(np.atleast_2d(s_a)) + np.trace(np.atleast_2d(s_b))
                 - 2 * tr_covmean)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(u, v) = (u.v / d + 1)^3."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    off = m * (m - 1)
    return float((k_xx.sum() - np.trace(k_xx)) / off + (k_yy.sum() - np.trace(k_yy)) / off
                 - 2 * k_xy.mean())


def kid(a: np.ndarray | Tensor, b: np.ndarray | Tensor, *, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception distance: (mean, std) of unbiased MMD^2 over random subsets.

    `subset_size` is clipped to min(len(a), len(b)); subsets are drawn without replacement.
    """
    a, b = _as_pair(a, b)
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    mmd = [_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
           for _ in range(n_subsets)]
    return float(np.mean(mmd)), float(np.std(mmd))


def sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(len(x), len(y)) squared Euclidean distances."""
    d = (x**2).sum(1)[:, None] + (y**2).sum(1)[None] - 2 * x @ y.T
    return np.maximum(d, 0)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row."""
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = sq_dists(x[i:i + chunk], x)
        out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself
    return out


def _coverage(manifold: np.ndarray, radii: np.ndarray, probes: np.ndarray, chunk: int) -> float:
    """Share of probes inside at least one k-NN ball of the manifold points."""
    inside = [(sq_dists(probes[i:i + chunk], manifold) <= radii[None]).any(1)
              for i in range(0, len(probes), chunk)]
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, *, k: int = 3,
                     chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN radii manifolds.

    precision: share of fake samples inside the real manifold; recall: share of real
    samples inside the fake manifold.
    """
    real, fake = _as_pair(real, fake)
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in [1, {min(len(real), len(fake)) - 1}] for {len(real)} real and "
                         f"{len(fake)} fake rows, got {k}")
    precision = _coverage(real, _knn_radii(real, k, chunk), fake, chunk)
    recall = _coverage(fake, _knn_radii(fake, k, chunk), real, chunk)
    return precision, recall


__all__ = ["frechet_distance", "kid", "precision_recall"]
