"""Autoregressive priors beyond the contract: blind spots, kernel shapes the caches must handle,
what fit reports. The contract's rules (`priors.contract`: cached logits equal the
full forward, cached and naive sampling agree, causality) run on every autoregressive prior in
tests/test_priors.py."""

from __future__ import annotations

import pytest
import torch

import priors
from priors import NullProgress, get_prior
from priors.autoregressive import AutoregressivePrior
from priors.contract import input_gradient

K, GRID = 10, (5, 6)


def make(name: str, num_classes: int = 0, grid=GRID, **changes) -> AutoregressivePrior:
    cls = get_prior(name)
    config = cls.preset("tiny")
    if changes:
        config = type(config)(**{**config.__dict__, **changes})
    return cls(config, num_codes=K, grid=grid, num_classes=num_classes)


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


def test_val_grids_scores_a_fixed_subset_of_val_and_keys_only_when_set():
    from priors.base import cache_key_fields
    from priors.netprior import val_subset
    g = torch.Generator().manual_seed(0)
    val = priors.CodeSet(torch.randint(0, K, (20, *GRID), generator=g), K,
                         torch.arange(20) % 2)
    sub = val_subset(val, 6)
    picked = [next(i for i in range(20) if torch.equal(val.codes[i], c)) for c in sub.codes]
    assert len(sub) == 6 and picked == sorted(picked)  # stored order
    assert torch.equal(sub.labels, val.labels[picked])
    assert torch.equal(val_subset(val, 6).codes, sub.codes)  # fixed, not drawn anew
    assert val_subset(val, 0) is val and val_subset(val, 20) is val
    scored = []
    prior = make("maskgit", val_grids=6)
    original = type(prior).mean_nats_per_code

    def spy(self, split, *rest):
        scored.append(split.codes.clone())
        return original(self, split, *rest)

    type(prior).mean_nats_per_code = spy
    try:
        for seed in (0, 1):
            summary = prior.fit(priors.CodeSet(val.codes, K), val, seed=seed,
                                progress=NullProgress())
    finally:
        type(prior).mean_nats_per_code = original
    assert summary["val_grids"] == 6 and len(scored) == 2 * prior.config.epochs
    assert all(torch.equal(s, sub.codes) for s in scored)  # every epoch, every seed
    assert "val_grids" not in cache_key_fields(make("maskgit").config)  # old fits stay found
    assert cache_key_fields(prior.config)["val_grids"] == 6
    with pytest.raises(Exception, match="val_grids"):
        make("maskgit", val_grids=-1)


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
