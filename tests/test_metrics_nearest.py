"""The bounded nearest-SSIM search: its bound bounds, its float32 error bound holds, and its
answers equal scoring every pair with `ssim` (random, near-duplicate, tied, adversarial sets)."""

import pytest
import torch

from bench.metrics import nearest
from bench.metrics.image import C1, C2, WIN, _Filter, gaussian_taps, ssim
from bench.metrics.nearest import exceeds, hermite_taps, nearest_quantile, nearest_ssim, strip_rows
from tests.test_metrics_image import brain_phantoms


def family(kind: str, n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) images in [0, 1] of one kind, random or built to stress the bounds."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    shape = (n, 1, size, size)
    if kind == "uniform":
        return rand(*shape)
    if kind == "constant":  # zero variance everywhere: SSIM rides on C1, C2 alone
        return rand(n, 1, 1, 1).expand(shape).clone()
    if kind == "bright-flat":  # tiny variance on a bright level: the worst float32 cancellation
        return (0.9 + 0.1 * rand(n, 1, 1, 1) + 1e-3 * rand(*shape)).clamp(0, 1)
    if kind == "checker":  # periodic patterns and their inverses: strongly anti-correlated pairs
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        period = 1 + torch.randint(1, 4, (n, 1, 1, 1), generator=g)
        board = (((yy // period) + (xx // period)) % 2).float()
        flip = rand(n, 1, 1, 1) < 0.5
        return torch.where(flip, 1 - board, board) * (0.3 + 0.7 * rand(n, 1, 1, 1))
    if kind == "binary":
        return (rand(*shape) < 0.5).float()
    if kind == "brains":
        return brain_phantoms(n, size=size, seed=seed)
    if kind == "near-duplicates":  # one image and small perturbations of it
        base = brain_phantoms(1, size=size, seed=seed)
        return (base + 0.02 * torch.randn(shape, generator=g)).clamp(0, 1)
    raise AssertionError(kind)


KINDS = ["uniform", "constant", "bright-flat", "checker", "binary", "brains", "near-duplicates"]


def ssim_strips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, M, S) float64: each strip's share of SSIM(x[i], y[j]), from the SSIM map."""
    x, y = x.double(), y.double()
    filt = _Filter(x[:1])
    mu_x, mu_y = filt(x[:, 0])[:, None], filt(y[:, 0])[None]
    var_x = filt(x[:, 0] ** 2)[:, None] - mu_x**2
    var_y = filt(y[:, 0] ** 2)[None] - mu_y**2
    cov = filt(x[:, None, 0] * y[None, :, 0]) - mu_x * mu_y
    s = (2 * mu_x * mu_y + C1) * (2 * cov + C2) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    P = s.shape[-1] * s.shape[-2]
    return torch.stack([s[..., a:b, :].sum((-1, -2)) / P for a, b in strip_rows(s.shape[-2])], -1)


def brute(queries: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """(N, M) float64 SSIM of every pair, by `ssim` itself."""
    return torch.stack([ssim(q[None].expand(len(refs), -1, -1, -1), refs) for q in queries])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_strip_bounds_bound_every_strip_of_every_pair(kind, degree):
    x = torch.cat([family(kind, 6, seed=1), family("uniform", 2, seed=2)])
    y = torch.cat([family(kind, 7, seed=3), x[:2]])  # some identical pairs too
    exact = ssim_strips(x, y).permute(2, 0, 1)  # (S, N, M)
    bounds = nearest.strip_bounds(x, y, degree=degree).double()
    assert bounds.shape == exact.shape
    assert (bounds >= exact).all(), (bounds - exact).min()


@pytest.mark.parametrize("kind", KINDS)
def test_float32_scores_are_within_their_error_bound(kind):
    x, y = family(kind, 5, seed=4), family(kind, 6, seed=5)
    pairs = nearest._Pairs(x, y, 2)
    qi, rj = torch.meshgrid(torch.arange(5), torch.arange(6), indexing="ij")
    qi, rj = qi.flatten(), rj.flatten()
    values, errors, work = pairs.score(qi, rj, torch.full((30,), float("-inf"), dtype=torch.float64))
    assert work == 30  # nothing dropped: every strip of every pair scored
    truth = brute(x, y).flatten()
    assert ((values - truth).abs() <= errors).all(), ((values - truth).abs() - errors).max()


def test_hermite_window_vectors_are_orthonormal_and_see_no_mean():
    a = hermite_taps(3) / gaussian_taps().sqrt()  # (4, 11): the a_i themselves
    vectors = torch.stack([torch.outer(a[i], a[j]).flatten() for i in range(4) for j in range(4)])
    assert torch.allclose(vectors @ vectors.T, torch.eye(16, dtype=torch.float64), atol=1e-12)
    root_g = torch.outer(gaussian_taps(), gaussian_taps()).flatten().sqrt()
    assert torch.allclose(vectors[1:] @ root_g, torch.zeros(15, dtype=torch.float64), atol=1e-12)


def test_strips_cover_the_rows_once():
    for h, n in ((1, 1), (3, 1), (40, 2), (54, 3), (118, 7), (246, 8)):
        rows = [r for a, b in strip_rows(h) for r in range(a, b)]
        assert rows == list(range(h)) and len(strip_rows(h)) == n


@pytest.mark.parametrize("kind", ["uniform", "brains", "near-duplicates", "checker", "bright-flat"])
def test_nearest_equals_scoring_every_pair(kind):
    queries, refs = family(kind, 9, seed=6), family(kind, 40, seed=7)
    queries[0] = refs[13]  # an exact copy
    full = brute(queries, refs)
    found = nearest_ssim(queries, refs)
    assert torch.equal(found.values, full.max(1).values)
    assert torch.equal(found.index, full.argmax(1))  # the first maximiser
    assert found.exact_pairs <= 9 * 40


def test_ties_go_to_the_lowest_index():
    refs = brain_phantoms(12, size=32, seed=8)
    refs[7], refs[10], refs[3] = refs[2], refs[2], refs[5]  # duplicates of the best and others
    queries = torch.cat([refs[2:3], (refs[5:6] + 0.01).clamp(0, 1), brain_phantoms(2, size=32, seed=9)])
    full = brute(queries, refs)
    found = nearest_ssim(queries, refs)
    assert torch.equal(found.values, full.max(1).values)
    assert found.index[0] == 2 and found.index[1] == 3
    assert torch.equal(found.index, full.argmax(1))


def test_non_square_and_single_window_images():
    g = torch.Generator().manual_seed(10)
    for shape in ((20, 33), (11, 11), (11, 40)):
        q, r = torch.rand(4, 1, *shape, generator=g), torch.rand(15, 1, *shape, generator=g)
        assert torch.equal(nearest_ssim(q, r).values, brute(q, r).max(1).values)


def test_floor_keeps_only_maxima_at_or_above_it():
    queries, refs = family("brains", 8, seed=11), family("brains", 30, seed=12)
    best = brute(queries, refs).max(1).values
    floor = float(best.median())
    found = nearest_ssim(queries, refs, floor=floor)
    above = best >= floor
    assert torch.equal(found.values[above], best[above])
    assert (found.values[~above] == float("-inf")).all() and (found.index[~above] == -1).all()


@pytest.mark.parametrize("kind", ["brains", "near-duplicates", "uniform"])
def test_exceeds_and_quantile_equal_scoring_every_pair(kind):
    queries, refs = family(kind, 20, seed=13), family(kind, 50, seed=14)
    queries[:2] = refs[:2]
    best = brute(queries, refs).max(1).values
    for t in (float(best.min()) - 0.01, float(best.median()), float(best.max()), 0.999):
        assert torch.equal(exceeds(queries, refs, t), best > t)  # strictly above
    for q in (0.05, 0.5, 0.9, 0.95, 1.0):
        assert nearest_quantile(queries, refs, q) == float(torch.quantile(best, q))


def test_pruning_scores_fewer_pairs_than_all_of_them():
    refs = brain_phantoms(60, size=48, seed=15)
    queries = (brain_phantoms(10, size=48, seed=16) + 0.0).clamp(0, 1)
    found = nearest._search(queries, refs, lambda b: torch.full_like(b, 0.99), stop_above=True,
                            degree=2)
    assert found.exact_pairs < 0.5 * 10 * 60


def test_bad_input_is_named():
    a = brain_phantoms(3, size=24)
    with pytest.raises(ValueError, match="same image shape"):
        nearest_ssim(a, a[..., :20, :20])
    with pytest.raises(ValueError, match="non-empty"):
        nearest_ssim(a[:0], a)
    with pytest.raises(ValueError, match="non-empty"):
        exceeds(a, a[:0], 0.5)
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\]"):
        nearest_quantile(a, a, 1.5)
    with pytest.raises(ValueError, match=r"queries must be \(N, 1, H, W\)"):
        nearest_ssim(a[:, 0], a)
    with pytest.raises(ValueError, match="at least 11x11"):
        nearest_ssim(a[..., :8, :8], a[..., :8, :8])
    assert WIN == 11
