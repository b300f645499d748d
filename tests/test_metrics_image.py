"""Image metrics against scikit-image and known values, on smooth brain-like phantoms."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench.metrics import (diversity, memorisation, memorisation_threshold, memorised_share, nn_ssim,
                           psnr, ssim, ssim_matrix)


def brain_phantoms(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) float32 in [0, 1]: a textured head ellipse with dark ventricles."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    p = torch.rand(n, 8, 1, 1, generator=g)
    ax, ay = 0.6 + 0.25 * p[:, 0], 0.7 + 0.2 * p[:, 1]
    cx, cy = 0.15 * (p[:, 2] - 0.5), 0.15 * (p[:, 3] - 0.5)
    head = torch.sigmoid((1 - ((xx - cx) / ax) ** 2 - ((yy - cy) / ay) ** 2) * 12)
    folds = 0.55 + 0.25 * torch.cos(6 * xx + 3 * p[:, 4]) * torch.sin((5 + 3 * p[:, 6]) * yy + 3 * p[:, 5])
    ventricles = torch.sigmoid((1 - ((xx - cx) / (0.2 * ax)) ** 2 - ((yy - cy) / ((0.25 + 0.2 * p[:, 7]) * ay)) ** 2) * 10)
    return (head * folds * (1 - 0.8 * ventricles)).clamp(0, 1)[:, None]


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([structural_similarity(a[0].double().numpy(), b[0].double().numpy(), data_range=1,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                     for a, b in zip(x, y)])


def test_ssim_matches_skimage_on_phantoms():
    x, y = brain_phantoms(6, seed=1), brain_phantoms(6, seed=2)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for b in (y, noisy):
        np.testing.assert_allclose(ssim(x, b).numpy(), _skimage_ssim(x, b), atol=1e-4)


def test_ssim_matches_skimage_on_non_square():
    x, y = brain_phantoms(2, size=48, seed=3)[..., :40], brain_phantoms(2, size=48, seed=4)[..., :40]
    np.testing.assert_allclose(ssim(x, y).numpy(), _skimage_ssim(x, y), atol=1e-4)


def test_ssim_of_identical_images_is_one_in_any_batching():
    x, y = brain_phantoms(5), brain_phantoms(5, seed=1)
    assert torch.allclose(ssim(x, x), torch.ones(5, dtype=torch.float64))
    assert torch.equal(ssim(x, y, batch=2), ssim(x, y))


def test_psnr_matches_skimage_and_is_inf_for_identical():
    x, y = brain_phantoms(3, seed=5), brain_phantoms(3, seed=6)
    ref = [peak_signal_noise_ratio(a[0].double().numpy(), b[0].double().numpy(), data_range=1) for a, b in zip(x, y)]
    np.testing.assert_allclose(psnr(x, y).numpy(), ref, rtol=1e-9)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_matrix_agrees_with_pairwise_ssim():
    a, b = brain_phantoms(5, seed=7), brain_phantoms(7, seed=8)
    m = ssim_matrix(a, b, batch=3)  # small batch exercises the chunking
    assert m.shape == (5, 7)
    ref = torch.stack([ssim(a[i:i + 1].expand(7, -1, -1, -1), b) for i in range(5)])
    assert torch.allclose(m.double(), ref, atol=1e-5)
    assert torch.allclose(ssim_matrix(a, a).diag(), torch.ones(5), atol=1e-5)


def test_nn_ssim_finds_the_copy():
    ref = brain_phantoms(10, seed=9)
    samples = torch.cat([ref[3:4], brain_phantoms(2, seed=10)])
    best = nn_ssim(samples, ref)
    assert best.shape == (3,)
    assert best[0] == pytest.approx(1.0, abs=1e-5)
    assert (best[1:] < 0.999).all()


def test_memorisation_copies_score_one_and_heldout_about_one_minus_quantile():
    train, heldout, fresh = brain_phantoms(60, seed=11), brain_phantoms(40, seed=12), brain_phantoms(200, seed=13)
    assert memorisation(train[:20], train, heldout) == 1.0
    share = memorisation(fresh, train, heldout, quantile=0.8)
    assert share == pytest.approx(0.2, abs=0.1)


def test_diversity_lower_for_varied_samples_and_reproducible():
    varied = brain_phantoms(12, seed=14)
    copies = varied[:1].expand(12, -1, -1, -1)
    assert diversity(copies) == pytest.approx(1.0)
    assert diversity(varied) < 0.9
    draw = [diversity(varied, max_pairs=10, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert draw[0] == draw[1]


@pytest.mark.parametrize("fn", [ssim, psnr])
def test_pair_metrics_reject_bad_input(fn):
    x = brain_phantoms(2)
    with pytest.raises(ValueError, match="same shape"):
        fn(x, x[:1])
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        fn(x[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="float tensor"):
        fn((x * 255).to(torch.uint8), x)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        fn(x, x * 255)
    with pytest.raises(ValueError, match="at least 11x11"):
        fn(x[..., :8, :8], x[..., :8, :8])


def test_matrix_metrics_reject_bad_input():
    a = brain_phantoms(3)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        ssim(a, a, batch=0)
    with pytest.raises(ValueError, match="same image shape"):
        ssim_matrix(a, a[..., :32, :32])
    with pytest.raises(ValueError, match="batch must be >= 1"):
        ssim_matrix(a, a, batch=0)
    with pytest.raises(ValueError, match="quantile must be in"):
        memorisation(a, a, a, quantile=1.0)
    with pytest.raises(ValueError, match="non-empty"):
        memorisation(a[:0], a, a)
    with pytest.raises(ValueError, match="at least 2 samples"):
        diversity(a[:1])
    with pytest.raises(ValueError, match="max_pairs must be >= 1"):
        diversity(a, max_pairs=0)


def test_memorisation_in_two_steps_equals_the_one_call():
    g = torch.Generator().manual_seed(3)
    train, heldout, samples = (torch.rand(n, 1, 16, 16, generator=g) for n in (12, 10, 8))
    samples[:3] = train[:3]
    threshold = memorisation_threshold(train, heldout, quantile=0.9)
    assert memorised_share(samples, train, threshold) == memorisation(samples, train, heldout,
                                                                      quantile=0.9)
    assert memorised_share(samples, train, threshold) >= 3 / 8
    with pytest.raises(ValueError, match="quantile must be in"):
        memorisation_threshold(train, heldout, quantile=0.0)
    with pytest.raises(ValueError, match="must be non-empty"):
        memorised_share(samples[:0], train, threshold)
