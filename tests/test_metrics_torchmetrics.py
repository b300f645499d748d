"""FD and KID against an independent implementation: torchmetrics, on the same feature matrices.

FD goes through torchmetrics' public FrechetInceptionDistance with an identity feature module
(its "images" are our feature rows). KID goes through the public KernelInceptionDistance where
both sides see the same subsets (subset size = the whole set: every subset is a permutation, and
the unbiased MMD^2 does not depend on order); with smaller subsets torchmetrics draws its own
with torch.randperm, so there we feed torchmetrics' `poly_mmd` the subsets our seeded `kid` draws.
Same kernel on both sides: (u.v / d + 1)^3, torchmetrics' defaults (degree 3, gamma 1/d, coef 1).
"""

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image import fid as torchmetrics_fid  # the `test` extra
from torchmetrics.image import kid as torchmetrics_kid

from bench.metrics import frechet_distance, kid


class Rows(nn.Module):
    """A 'feature extractor' that hands its input rows through unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated, non-negative rows, like pooled conv features (float64); each seed mixes its
    own way, so two seeds are two distributions."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.abs(rng.normal(size=(n, d)) @ mix + shift + 0.5)


@pytest.mark.parametrize("n, d, shift", [(250, 32, 0.0), (250, 32, 0.3), (500, 128, 0.1)])
def test_frechet_distance_equals_torchmetrics_fid(n, d, shift):
    a, b = features(n, d, 1), features(n, d, 2, shift)
    fid = torchmetrics_fid.FrechetInceptionDistance(feature=Rows(d))
    fid.update(torch.from_numpy(a), real=True)  # float64 in: torchmetrics keeps float64 out
    fid.update(torch.from_numpy(b), real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
@pytest.mark.parametrize("n, d, shift", [(250, 32, 0.0), (200, 128, 0.2)])
def test_kid_on_whole_sets_equals_torchmetrics_kid(n, d, shift):
    a, b = features(n, d, 3), features(n, d, 4, shift)
    reference = torchmetrics_kid.KernelInceptionDistance(feature=Rows(d), subsets=3, subset_size=n)
    reference.update(torch.from_numpy(a), real=True)
    reference.update(torch.from_numpy(b), real=False)
    their_mean, _ = reference.compute()
    mean, std = kid(a, b, n_subsets=3, subset_size=n)
    assert mean == pytest.approx(float(their_mean), rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_equal_torchmetrics_poly_mmd_on_the_same_subsets():
    a, b = features(300, 64, 5), features(260, 64, 6, 0.2)
    n_subsets, m, seed = 7, 100, 11
    rng = np.random.default_rng(seed)  # the draws `kid` makes, in its order
    mmd = []
    for _ in range(n_subsets):
        ia, ib = rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)
        pair = torch.from_numpy(a[ia]), torch.from_numpy(b[ib])
        mmd.append(float(torchmetrics_kid.poly_mmd(*pair)))
    mean, std = kid(a, b, n_subsets=n_subsets, subset_size=m, seed=seed)
    assert mean == pytest.approx(np.mean(mmd), rel=1e-6)
    assert std == pytest.approx(np.std(mmd), rel=1e-6)
