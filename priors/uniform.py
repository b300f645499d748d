"""The floor: every code equally likely at every position. bits/code == log2 K exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from priors.base import CodeSet, Prior, Progress, register_prior


@register_prior("uniform")
class UniformPrior(Prior):
    @dataclass(frozen=True)
    class Config:
        pass  # nothing to choose: the uniform prior has no parameters

    def fit(self, train: CodeSet, val: CodeSet, *, seed: int, progress: Progress) -> dict[str, float]:
        return {}

    def sample(self, n: int, *, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
        h, w = self.grid
        return torch.randint(0, self.num_codes, (n, h, w), generator=generator,
                             device=generator.device).to(self.device)

    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        n_pos = codes.shape[1] * codes.shape[2]
        return torch.full((codes.shape[0],), -n_pos * math.log(self.num_codes),
                          dtype=torch.float64, device=codes.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError(f"uniform prior has no state, got keys {sorted(state)}")
