"""Autoregressive priors: cached and full forward agree; causality; no blind spot (gated)."""

from __future__ import annotations

import pytest
import torch

import priors
from priors import NullProgress, get_prior
from priors.autoregressive import AutoregressivePrior

AUTOREGRESSIVE = [n for n in priors.available_priors()
                  if issubclass(get_prior(n), AutoregressivePrior)]
K, GRID = 10, (5, 6)


def make(name: str, num_classes: int = 0, grid=GRID, **changes) -> AutoregressivePrior:
    cls = get_prior(name)
    config = cls.preset("tiny")
    if changes:
        config = type(config)(**{**config.__dict__, **changes})
    return cls(config, num_codes=K, grid=grid, num_classes=num_classes)


def labels_for(prior: AutoregressivePrior, n: int) -> torch.Tensor | None:
    return torch.arange(n) % prior.num_classes if prior.uses_labels else None


@pytest.fixture(params=[(name, c) for name in AUTOREGRESSIVE
                        for c in ((0, 3) if get_prior(name).conditional else (0,))],
                ids=lambda p: f"{p[0]}-classes{p[1]}")
def prior(request) -> AutoregressivePrior:
    return make(*request.param)  # the random init; fit is not needed to compare paths


def test_cached_logits_equal_full_forward_at_every_position(prior):
    labels = labels_for(prior, 3)
    codes = prior.sample(3, generator=torch.Generator().manual_seed(0), labels=labels)
    full = prior.logits(codes, labels).detach()  # (3, K, h, w)
    cached = prior.stepwise_logits(codes, labels)
    assert cached.shape == full.shape
    assert torch.allclose(cached, full, rtol=0, atol=1e-5), (cached - full).abs().max()


def test_cached_and_naive_sampling_draw_identical_grids(prior):
    labels = labels_for(prior, 4)
    draw = lambda cache: prior.sample(4, generator=torch.Generator().manual_seed(5),  # noqa: E731
                                      labels=labels, use_cache=cache)
    assert torch.equal(draw(True), draw(False))


def test_sampling_is_reproducible_from_the_generator(prior):
    labels = labels_for(prior, 2)
    a, b = (prior.sample(2, generator=torch.Generator().manual_seed(9), labels=labels)
            for _ in range(2))
    assert torch.equal(a, b)


def input_gradient(prior: AutoregressivePrior, i: int, j: int) -> torch.Tensor:
    """(h, w) bool: positions whose input embedding moves the logits at (i, j)."""
    prior.net.double()
    codes = torch.randint(0, K, (1, *prior.grid), generator=torch.Generator().manual_seed(1))
    x = prior.net.embed(codes).movedim(-1, 1).detach().requires_grad_()  # (1, E, h, w)
    prior.net.from_embedding(x, labels_for(prior, 1))[0, :, i, j].sum().backward()
    return x.grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_logits_never_see_the_current_or_later_positions(name):
    prior = make(name)
    h, w = prior.grid
    for i, j in [(0, 0), (2, 3), (h - 1, w - 1), (1, w - 1)]:
        seen = input_gradient(prior, i, j).flatten()
        assert not seen[i * w + j:].any(), f"position {(i, j)} sees itself or the future"


def test_gated_pixelcnn_has_no_blind_spot():
    # 4 layers of 3x3 cover every earlier position of a 5x5 grid
    prior = make("gated-pixelcnn", grid=(5, 5), n_layers=4, first_kernel=3)
    for i, j in [(2, 2), (4, 4), (3, 0), (1, 4)]:
        seen = input_gradient(prior, i, j).flatten()
        assert seen[:i * 5 + j].all() and not seen[i * 5 + j:].any()


def test_pixelcnn_has_the_known_blind_spot():
    # the reason gated-pixelcnn exists: up-right positions are invisible to stacked masks
    prior = make("pixelcnn", grid=(6, 6), first_kernel=3, n_blocks=3)
    seen = input_gradient(prior, 4, 2)
    assert not seen[3, 5] and seen[3, 3]


def test_fit_reports_bits_per_code_each_epoch():
    reported = []

    class Recorder(NullProgress):
        def advance(self, n: int = 1, **metrics: float) -> None:
            reported.append(metrics)

    prior = make("pixelcnn")
    codes = torch.randint(0, K, (8, *GRID), generator=torch.Generator().manual_seed(0))
    split = priors.CodeSet(codes, K)
    result = prior.fit(split, split, seed=0, progress=Recorder())
    assert len(reported) == prior.config.epochs
    assert all(set(m) == {"val_bits_per_code", "train_bits_per_code"} for m in reported)
    assert result["val_bits_per_code"] == pytest.approx(min(m["val_bits_per_code"]
                                                            for m in reported))


def test_gated_vertical_residual_variant_caches_exactly():
    prior = make("gated-pixelcnn", num_classes=2, vertical_residual=True, n_layers=3)
    codes = torch.randint(0, K, (2, *GRID), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1])
    assert torch.allclose(prior.stepwise_logits(codes, labels),
                          prior.logits(codes, labels).detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,changes", [
    ("pixelcnn", {"first_kernel": 1, "kernel": 1}),  # type A 1x1 has no taps: bias only
    ("pixelcnn", {"first_kernel": 3, "kernel": 5}),
    ("pixelcnn", {"first_kernel": 5, "kernel": 3, "n_blocks": 3}),
    ("gated-pixelcnn", {"first_kernel": 3, "kernel": 5, "n_layers": 3}),
    ("gated-pixelcnn", {"first_kernel": 5, "kernel": 3, "n_layers": 1}),
], ids=str)
def test_caches_are_exact_for_other_kernel_shapes(name, changes):
    prior = make(name, grid=(4, 7), **changes)
    codes = torch.randint(0, K, (3, 4, 7), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(prior.stepwise_logits(codes), prior.logits(codes).detach(),
                          rtol=0, atol=1e-5)
    draw = lambda cache: prior.sample(3, generator=torch.Generator().manual_seed(4),  # noqa: E731
                                      use_cache=cache)
    assert torch.equal(draw(True), draw(False))


def test_conv_cache_rejects_masks_it_cannot_cache():
    from priors.autoregressive import CausalConv2d
    mask = torch.ones(3, 3)
    mask[2, 2] = 0  # a row below the current one is visible: not causal in raster order
    conv = CausalConv2d(2, 2, (3, 3), (1, 1, 1, 1), mask)
    with pytest.raises(ValueError, match="nothing below"):
        conv.cache(1, (4, 4), conv.conv.weight)
