"""maskgit beyond the contract: the fixed decoding order, its exact likelihood with parallel
groups, T forward passes per sample and per log_prob, bidirectional attention, the masked loss."""

from __future__ import annotations

import math

import pytest
import torch

from priors import CodeSet, NullProgress
from priors.contract import all_grids, normalisation_split
from priors.maskgit import MaskGITPrior, decoding_groups
from priors.training import Shard


def make(grid=(2, 2), num_codes: int = 3, num_classes: int = 0, **changes) -> MaskGITPrior:
    config = MaskGITPrior.Config(**{**MaskGITPrior.preset("tiny").__dict__, **changes})
    return MaskGITPrior(config, num_codes=num_codes, grid=grid, num_classes=num_classes)


def test_decoding_groups_follow_the_cosine_schedule_and_cover_every_position_once():
    groups = decoding_groups((16, 16), 8, seed=0)
    # masked after step t: floor(256 cos(pi/2 t/8)) = 251, 236, 212, 181, 142, 97, 49, 0
    assert [len(g) for g in groups] == [5, 15, 24, 31, 39, 45, 48, 49]  # few first, most last
    assert sorted(torch.cat(groups).tolist()) == list(range(256))
    assert not torch.equal(torch.cat(groups), torch.cat(decoding_groups((16, 16), 8, seed=1)))
    assert len(decoding_groups((2, 2), 8, seed=0)) == 4  # more steps than positions: no empty steps


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_likelihood_with_parallel_groups_is_normalised(steps, num_classes):
    """steps=1: every code drawn at once given nothing; steps=2: two groups of two."""
    prior = make(num_classes=num_classes, steps=steps)
    split = normalisation_split(64, 0, labelled=bool(num_classes))
    prior.fit(split, split, seed=0, progress=NullProgress())
    for label in range(num_classes) if num_classes else [None]:
        labels = None if label is None else torch.full((81,), label)
        total = prior.log_prob(all_grids(), labels).exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-6)  # float32 logits


def test_sampling_and_log_prob_cost_one_forward_per_step(monkeypatch):
    prior = make(grid=(8, 8), num_codes=5, steps=6)
    calls = []
    forward = prior.net.forward
    monkeypatch.setattr(prior.net, "forward", lambda *a: calls.append(1) or forward(*a))
    codes = prior.sample(3, generator=torch.Generator().manual_seed(0))
    assert len(calls) == len(prior.groups) == 6
    prior.log_prob(codes)
    assert len(calls) == 12


def test_attention_is_bidirectional():
    prior = make(grid=(3, 3), num_codes=4)
    tokens = torch.full((1, 9), prior.net.mask_id)
    other = tokens.clone()
    other[0, 8] = 2  # a later position changes the logits at the first
    assert not torch.allclose(prior.net(tokens)[0, 0], prior.net(other)[0, 0])


def test_training_loss_is_the_masked_cross_entropy():
    prior = make(grid=(4, 4), num_codes=6)
    codes = torch.randint(0, 6, (8, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        whole = Shard(torch.arange(8), torch.arange(8), 8, 8)
        loss = prior.train_loss(codes, None, model=prior.net, shard=whole)
    assert loss.shape == (8,) and 0 < loss.mean().item() < 2 * math.log(6)  # ~log K at init
    with torch.random.fork_rng():  # a shard of the global batch gets its rows' masks
        torch.manual_seed(0)
        half = Shard(torch.arange(4, 8), torch.arange(4, 8), 4, 8)
        part = prior.train_loss(codes[4:], None, model=prior.net, shard=half)
    torch.testing.assert_close(part, loss[4:])
    prior.fit(CodeSet(codes, 6), CodeSet(codes, 6), seed=0, progress=NullProgress())


@pytest.mark.parametrize("field,value,match", [
    ("steps", 0, "steps must be >= 1"), ("n_heads", 3, "dim must be a multiple of n_heads=3"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        MaskGITPrior.Config(**{field: value})


def test_one_position_per_step_is_the_chain_rule_in_the_fixed_order():
    """T large enough for one position per group: log_prob is an autoregressive factorisation
    in the permutation's order; the first position's marginal (summed over the other three)
    is the net's softmax on the all-masked grid."""
    prior = make(steps=8)
    split = normalisation_split(64, 0, labelled=False)
    prior.fit(split, split, seed=0, progress=NullProgress())
    assert [len(g) for g in prior.groups] == [1, 1, 1, 1]
    first = int(prior.groups[0])
    p = prior.log_prob(all_grids()).exp()  # (81,), base-3 order over raster positions
    marginal = torch.zeros(3, dtype=torch.float64)
    marginal.index_add_(0, all_grids().flatten(1)[:, first], p)
    with torch.no_grad():
        direct = prior.net(torch.full((1, 4), prior.net.mask_id))[0, first].double().softmax(-1)
    torch.testing.assert_close(marginal, direct, atol=1e-6, rtol=0)


def test_samples_follow_the_cosine_decoding_schedule(monkeypatch):
    """Step t sees exactly the groups before it filled: floor(L cos(pi/2 t/T)) still masked."""
    prior = make(grid=(4, 4), num_codes=5, steps=4)
    seen = []
    forward = prior.net.forward
    monkeypatch.setattr(prior.net, "forward", lambda t, *a: seen.append(t.clone()) or forward(t, *a))
    prior.sample(2, generator=torch.Generator().manual_seed(0))
    masked = [(t == prior.net.mask_id).sum(1).tolist() for t in seen]
    assert masked == [[16, 16], [14, 14], [11, 11], [6, 6]]  # 16 floor(cos(pi/2 t/4)), t < 4
    for t, group in enumerate(prior.groups):
        filled = torch.cat(prior.groups[:t]) if t else torch.zeros(0, dtype=torch.int64)
        assert (seen[t][:, filled] != prior.net.mask_id).all()
        assert (seen[t][:, group] == prior.net.mask_id).all()
