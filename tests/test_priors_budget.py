"""Step budgets: `max_steps` caps a fit however large the dataset, for every trained prior."""

import dataclasses

import pytest
import torch

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


@pytest.mark.parametrize("name", [n for n in priors.available_priors()
                                  if "max_steps" in {f.name for f in dataclasses.fields(
                                      priors.get_prior(n).Config)}])
def test_max_steps_caps_the_fit(name, monkeypatch):
    cls = priors.get_prior(name)
    cfg = dataclasses.replace(cls.preset("tiny"), epochs=50, batch_size=4, max_steps=3)
    prior = cls(cfg, num_codes=8, grid=(4, 4), codebook=torch.randn(8, 4))
    steps = []
    monkeypatch.setattr(cls, "_step", lambda self, *a, **k: steps.append(1) or (
        (0.0, 0.0) if name == "dcgan" else 0.0))
    codes = torch.randint(0, 8, (40, 4, 4))
    progress = CountingProgress()
    prior.fit(priors.CodeSet(codes, 8), priors.CodeSet(codes[:4], 8), seed=0, progress=progress)
    assert len(steps) == 3 and progress.epochs == 1
