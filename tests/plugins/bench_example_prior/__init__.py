"""One code histogram shared by every grid position (a plug-in example, not a good prior)."""
from dataclasses import dataclass

import torch

from priors import CodeSet, Prior, Progress


class HistogramPrior(Prior):
    @dataclass(frozen=True)
    class Config:
        alpha: float = 1.0  # pseudo-count per code, so unseen codes keep a finite likelihood

    def __init__(self, config, *, num_codes, grid, num_classes=0, codebook=None, device="cpu"):
        super().__init__(config, num_codes=num_codes, grid=grid, num_classes=num_classes,
                         codebook=codebook, device=device)
        self.counts = torch.zeros(self.num_codes, dtype=torch.float64, device=self.device)

    def fit(self, train: CodeSet, val: CodeSet, *, seed: int, progress: Progress) -> dict:
        codes = self.check_codes(train.codes).flatten()
        self.counts = torch.bincount(codes, minlength=self.num_codes).double()
        return {}

    def log_probs(self) -> torch.Tensor:  # (K,) nats
        return (self.counts + self.config.alpha).log().log_softmax(0)  # log(c / sum c)

    def sample(self, n: int, *, generator: torch.Generator, labels=None) -> torch.Tensor:
        probs = self.log_probs().exp().float().to(generator.device)
        codes = torch.multinomial(probs, n * self.grid[0] * self.grid[1], replacement=True,
                                  generator=generator)
        return codes.view(n, *self.grid).to(self.device)

    def log_prob(self, codes: torch.Tensor, labels=None) -> torch.Tensor:
        return self.log_probs()[self.check_codes(codes)].sum(dim=(1, 2))  # (N,) nats

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].to(self.device, torch.float64).clone()
