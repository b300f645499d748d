"""Step budgets: `max_steps` caps a fit however large the dataset, for every trained prior."""

import collections
import dataclasses

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import priors
from priors.base import step_budget


@pytest.mark.parametrize("n,batch,epochs,cap,expected", [
    (100, 32, 3, 0, 12), (100, 32, 3, 5, 5), (100, 32, 3, 50, 12), (64, 32, 2, 3, 3)])
def test_step_budget(n, batch, epochs, cap, expected):
    assert step_budget(n, batch, epochs, cap) == expected


class CountingProgress(priors.NullProgress):
    def __init__(self):
        self.epochs = 0

    def advance(self, n: int = 1, **metrics: float) -> None:
        self.epochs += n


@pytest.fixture
def optimizer_steps():
    """step() calls per optimizer (by id) while the test runs, whatever the prior's loop."""
    counts = collections.Counter()
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: counts.update([id(opt)]))
    yield counts
    handle.remove()


@pytest.mark.parametrize("name", [n for n in priors.available_priors()
                                  if "max_steps" in {f.name for f in dataclasses.fields(
                                      priors.get_prior(n).Config)}])
def test_max_steps_caps_the_fit(name, optimizer_steps):
    cls = priors.get_prior(name)
    cfg = dataclasses.replace(cls.preset("tiny"), epochs=50, batch_size=4, max_steps=3)
    g = torch.Generator().manual_seed(0)
    prior = cls(cfg, num_codes=8, grid=(4, 4), codebook=torch.randn(8, 4, generator=g))
    codes = torch.randint(0, 8, (40, 4, 4), generator=g)
    progress = CountingProgress()
    prior.fit(priors.CodeSet(codes, 8), priors.CodeSet(codes[:4], 8), seed=0, progress=progress)
    assert max(optimizer_steps.values()) == 3  # no optimizer stepped more than max_steps
    assert progress.epochs == 1  # 3 steps of 10 per epoch: the first epoch, cut short
