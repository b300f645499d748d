"""Per-position empirical code distribution: p(grid) = prod over (i, j) of p_ij(code).

Counts plus a symmetric Dirichlet pseudo-count (`alpha`) so a code never seen at a position
still has a finite likelihood. Class-conditional (one table per class) when num_classes > 0.
The step above uniform that any spatial model must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from priors.base import CodeSet, Prior, PriorError, Progress, register_prior, require


@register_prior("unigram")
class UnigramPrior(Prior):
    conditional = True

    @dataclass(frozen=True)
    class Config:
        alpha: float = 0.01  # Dirichlet pseudo-count per (position, code); > 0 keeps unseen finite

        def __post_init__(self) -> None:
            require(self.alpha > 0, "alpha", self.alpha, "> 0")

    def __init__(self, config, *, num_codes: int, grid: tuple[int, int], num_classes: int = 0,
                 codebook: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(config, num_codes=num_codes, grid=grid, num_classes=num_classes,
                         codebook=codebook, device=device)
        tables = max(1, num_classes if self.uses_labels else 0)
        self.counts = torch.zeros(tables, *self.grid, num_codes, dtype=torch.float64,
                                  device=self.device)  # (C or 1, h, w, K)

    def fit(self, train: CodeSet, val: CodeSet, *, seed: int, progress: Progress) -> dict[str, float]:
        if len(train) == 0:
            raise PriorError("fit needs a non-empty train split")
        codes = self.check_codes(train.codes)
        table = self._table(self.check_labels(train.labels, len(train)), len(train))  # (N,)
        progress.start(f"fit {self.name}", total=1)
        # counts[t, i, j, k] += 1 for every grid's (table, position, code): a bincount of flat
        # indices, never an (N, h, w, K) one-hot (40 GB for ADNI at 32x32, K = 256)
        h, w = self.grid
        cell = (table[:, None, None] * h + torch.arange(h, device=self.device)[:, None]) * w
        flat = (cell + torch.arange(w, device=self.device)) * self.num_codes + codes
        self.counts.copy_(torch.bincount(flat.flatten(), minlength=self.counts.numel())
                          .view_as(self.counts).to(self.counts.dtype))
        result = {}
        if len(val):
            nats = -self.log_prob(val.codes, val.labels).sum() / val.codes.numel()
            result["val_bits_per_code"] = float(nats) / float(torch.log(torch.tensor(2.0)))
        progress.advance(1, **result)
        progress.stop()
        return result

    def _table(self, labels: Tensor | None, n: int) -> Tensor:  # (n,) row of `counts` to use
        return labels if labels is not None else torch.zeros(n, dtype=torch.int64,
                                                             device=self.device)

    def _log_probs(self) -> Tensor:  # (C or 1, h, w, K) log p_ij(code)
        smoothed = self.counts + self.config.alpha
        return (smoothed / smoothed.sum(dim=-1, keepdim=True)).log()

    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = self.check_codes(codes)
        table = self._table(self.check_labels(labels, codes.shape[0]), codes.shape[0])
        h, w = self.grid
        rows = torch.arange(h, device=self.device)[:, None]
        cols = torch.arange(w, device=self.device)
        logp = self._log_probs()[table[:, None, None], rows, cols, codes]  # (N, h, w)
        return logp.sum(dim=(1, 2))  # (N,) nats

    def sample(self, n: int, *, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
        table = self._table(self.check_labels(labels, n), n)
        probs = self._log_probs()[table].exp().reshape(-1, self.num_codes)  # (n*h*w, K)
        probs = probs.to(generator.device).float()
        codes = torch.multinomial(probs, 1, generator=generator)  # (n*h*w, 1)
        return codes.view(n, *self.grid).to(self.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        counts = state.get("counts")
        if set(state) != {"counts"} or counts.shape != self.counts.shape:
            raise PriorError(f"unigram state must be {{'counts': {tuple(self.counts.shape)}}}, "
                             f"got {({k: tuple(v.shape) for k, v in state.items()})}")
        self.counts = counts.to(self.device, torch.float64).clone()
