"""Feature-space metrics against closed forms and known extremes."""

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from bench.metrics import frechet_distance, kid, precision_recall


def _gaussian(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)


def _closed_form_fd(m1, c1, m2, c2) -> float:
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2))))


def test_frechet_distance_matches_closed_form_for_gaussians():
    d = 4
    rng = np.random.default_rng(0)
    m1, m2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    q1, q2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    c1, c2 = q1 @ q1.T + 0.5 * np.eye(d), q2 @ q2.T + 0.1 * np.eye(d)
    a, b = _gaussian(200_000, m1, c1, 1), _gaussian(200_000, m2, c2, 2)
    assert frechet_distance(a, b) == pytest.approx(_closed_form_fd(m1, c1, m2, c2), rel=0.02)


def test_frechet_distance_of_identical_sets_is_zero_and_accepts_tensors():
    a = np.random.default_rng(3).normal(size=(500, 16))
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(torch.from_numpy(a), a) == pytest.approx(frechet_distance(a, a), abs=1e-10)


def test_frechet_distance_stable_for_rank_deficient_covariance():
    a = np.random.default_rng(4).normal(size=(20, 64))  # d > N: singular covariances
    b = np.random.default_rng(5).normal(size=(20, 64))
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same_mean, same_std = kid(a, b, n_subsets=20, subset_size=300)
    shifted_mean, _ = kid(a, b + 1.0, n_subsets=20, subset_size=300)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 0.5
    assert kid(a, b, n_subsets=5, subset_size=5000, seed=1) == kid(a, b, n_subsets=5, subset_size=5000, seed=1)


def test_kid_matches_a_direct_unbiased_estimate():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(50, 8)), rng.normal(0.3, 1.0, size=(50, 8))
    k = lambda u, v: (u @ v / 8 + 1) ** 3  # noqa: E731
    kxx = np.mean([k(x[i], x[j]) for i in range(50) for j in range(50) if i != j])
    kyy = np.mean([k(y[i], y[j]) for i in range(50) for j in range(50) if i != j])
    kxy = np.mean([k(x[i], y[j]) for i in range(50) for j in range(50)])
    mean, std = kid(x, y, n_subsets=3, subset_size=50)  # the whole set: every subset is a permutation
    assert mean == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_precision_recall_same_and_disjoint():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.8 and r > 0.8
    p, r = precision_recall(real, fake + 20.0, k=3)
    assert p == 0.0 and r == 0.0


def test_precision_recall_mode_collapse_keeps_precision_loses_recall():
    rng = np.random.default_rng(9)
    real = rng.normal(size=(400, 4))
    collapsed = 0.2 * rng.normal(size=(400, 4))  # a sharp subset of the real mass
    p, r = precision_recall(real, collapsed, k=3, chunk=64)
    assert p > 0.9 and r < 0.5


def test_distribution_metrics_reject_bad_input():
    a = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"\(N, d\) feature matrix"):
        frechet_distance(a[0], a)
    with pytest.raises(ValueError, match="same feature dim"):
        frechet_distance(a, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(np.full((10, 3), np.nan), a)
    with pytest.raises(ValueError, match="n_subsets must be >= 1"):
        kid(a, a, n_subsets=0)
    with pytest.raises(ValueError, match="subset_size must be >= 2"):
        kid(a, a, subset_size=1)
    with pytest.raises(ValueError, match=r"k must be in \[1, 9\]"):
        precision_recall(a, a, k=10)
