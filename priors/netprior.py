"""The fit every network prior shares: a net built from a seed, AdamW with a warm-up and cosine
decay, `FitLoop`'s resumable and DDP-sharded steps, the best epoch on val kept.

A subclass supplies `build_net()` (the net, built under a seed), `train_loss(codes, labels,
model=, shard=)` (per-grid training losses of one minibatch, to be averaged) and `log_prob`
(validation scores val by it: the best epoch is the one of lowest val bits/code).
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from priors.base import (ADDED_LATER, Checkpoint, CodeSet, NullCheckpoint, Prior, PriorError,
                         Progress, require, seeded, step_budget)
from priors.training import FitLoop, Shard
from trainkit import PRECISIONS, data_parallel, resolve_precision, train_autocast


@dataclass(frozen=True)
class FitConfig:
    """Training fields shared by every network prior; subclass Configs add the net."""

    epochs: int = 10  # passes over the training grids; the best epoch on val is kept
    batch_size: int = 32  # grids per optimisation step
    lr: float = 1e-3  # peak AdamW learning rate, reached after the linear warm-up
    min_lr_frac: float = 0.05  # cosine decay ends at lr * min_lr_frac
    warmup_frac: float = 0.05  # share of all steps spent in linear warm-up from 0
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_batch_size: int = 256  # most grids per forward in log_prob and validation (memory;
    # on a CPU also speed: bench's test bits/code calls log_prob 16 grids at a time, 1.2-2.2x
    # faster than 256 at 32x32; a fit's validation still runs this many)
    max_steps: int = 0  # cap on optimisation steps (0: epochs decide); bounds a preset's cost on big datasets
    precision: str = "auto"  # fp32 | bf16 (autocast) | auto: bf16 on CUDA; on a CPU with native
    # bf16 (AVX512-BF16 or AMX) as the prior class's `cpu_bf16_from_positions` says; else fp32
    # val grids each epoch end scores (0: all): a fixed seeded subset, the same for every fit
    # seed and rank. For priors whose log_prob is costly (MaskGIT replays its decoding steps:
    # at `standard` on ADNI one pass over 2,160 val grids is ~25 min of 2 CPU cores)
    val_grids: int = field(default=0, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(self.lr > 0, "lr", self.lr, "> 0")
        require(0 <= self.min_lr_frac <= 1, "min_lr_frac", self.min_lr_frac, "in [0, 1]")
        require(0 <= self.warmup_frac < 1, "warmup_frac", self.warmup_frac, "in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        require(self.grad_clip >= 0, "grad_clip", self.grad_clip, ">= 0")
        require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        require(self.max_steps >= 0, "max_steps", self.max_steps, ">= 0 (0 = no cap)")
        require(self.val_grids >= 0, "val_grids", self.val_grids, ">= 0 (0 = all)")
        require(self.precision in PRECISIONS, "precision", self.precision,
                f"one of {', '.join(PRECISIONS)}")


class NetPrior(Prior):
    """A prior whose whole state is one `nn.Module`, trained by `fit` on `train_loss`."""

    # "auto" on a CPU with native bf16 trains in bf16 from grids of this many positions up,
    # fp32 below: set only where measured faster at the same test bits/code (README, Training
    # precision); the default, never, keeps a prior that was not measured in fp32
    cpu_bf16_from_positions: ClassVar[float] = math.inf

    def __init__(self, config, *, num_codes: int, grid: tuple[int, int], num_classes: int = 0,
                 codebook: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(config, num_codes=num_codes, grid=grid, num_classes=num_classes,
                         codebook=codebook, device=device)
        with seeded(0, self.device):  # a fresh instance is the same net every time
            self.net = self.build_net().to(self.device).eval()

    @abstractmethod
    def build_net(self) -> nn.Module:
        """The network (built under a seed: by __init__ and again by every fit)."""

    @abstractmethod
    def train_loss(self, codes: Tensor, labels: Tensor | None, *, model: nn.Module,
                   shard: Shard) -> Tensor:
        """Training losses (m, ...) of one minibatch (nats per code), averaged by `FitLoop.mean`;
        `model` is the net to call (DDP-wrapped under torch.distributed); `shard` says where
        the minibatch sits in the global batch (for noise drawn per global batch)."""

    def fit(self, train: CodeSet, val: CodeSet, *, seed: int, progress: Progress,
            checkpoint: Checkpoint = NullCheckpoint()) -> dict[str, float]:
        if len(train) == 0 or len(val) == 0:
            raise PriorError(f"fit needs non-empty train and val, got {len(train)} and {len(val)}")
        with seeded(seed, self.device):
            self.net = self.build_net().to(self.device)
            return self._train(train, val, seed, progress, checkpoint)

    def _train(self, train: CodeSet, val: CodeSet, seed: int, progress: Progress,
               checkpoint: Checkpoint) -> dict[str, float]:
        cfg = self.config
        precision = self.training_precision()
        codes = self.check_codes(train.codes)
        labels = self.check_labels(train.labels, len(train))
        total = step_budget(len(train), cfg.batch_size, cfg.epochs, cfg.max_steps)
        val = val_subset(val, cfg.val_grids)
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
        loop = FitLoop(n=len(train), batch_size=cfg.batch_size, total_steps=total, seed=seed,
                       device=self.device, checkpoint=checkpoint, progress=progress)
        run = loop.start(f"fit {self.name}", {"net": self.net, "opt": opt, "sched": sched},
                         {"best_nats": math.inf, "best_epoch": -1, "best_state": None,
                          "epoch_nats": 0.0, "epoch_steps": 0})
        model = data_parallel(self.net)
        try:
            for step in loop.steps():
                if not loop.update_done():  # done unless killed in this step's val pass
                    shard = loop.batch(step)
                    self.net.train()
                    run["epoch_nats"] += self._step(opt, sched, codes[shard.idx],
                                                    None if labels is None else labels[shard.idx],
                                                    model=model, loop=loop, shard=shard,
                                                    precision=precision)
                    run["epoch_steps"] += 1
                if loop.epoch_end(step):
                    self._end_epoch(val, loop, run, loop.epoch(step))
        finally:
            progress.stop()
        loop.finish(self.net)
        self.net.load_state_dict(run["best_state"])
        self.net.eval()
        return {"val_bits_per_code": run["best_nats"] / math.log(2), "val_grids": float(len(val)),
                "best_epoch": float(run["best_epoch"]), **loop.times(),
                "steps": float(total), "bf16_autocast": float(precision == "bf16")}

    def training_precision(self) -> str:
        """'fp32' or 'bf16': what `fit` trains in on this prior's device."""
        positions = self.grid[0] * self.grid[1]
        cpu_auto = "bf16" if positions >= type(self).cpu_bf16_from_positions else "fp32"
        return resolve_precision(self.config.precision, self.device, cpu_auto=cpu_auto)

    def _end_epoch(self, val: CodeSet, loop: FitLoop, run: dict[str, Any], epoch: int) -> None:
        """Score val (on every rank, all of it: the same number whatever the world size);
        keep the best epoch's weights. The val pass is resumable per batch: a checkpoint due
        during it keeps the grids' log-likelihoods so far (`val_done`), so a fit killed in a
        long pass (MaskGIT replays its decoding steps: ~25 min at standard on ADNI) goes on
        from there instead of scoring val again."""

        def keep(parts: list[Tensor]) -> None:
            run["val_done"] = parts
            loop.save_within_step()

        val_nats = self.mean_nats_per_code(val, run.pop("val_done", []), keep)
        run.pop("val_done", None)  # the pass is over: later checkpoints hold its result
        if val_nats < run["best_nats"]:
            run.update(best_nats=val_nats, best_epoch=epoch,
                       best_state=copy.deepcopy(self.net.state_dict()))
        loop.advance(val_bits_per_code=val_nats / math.log(2),
                     train_bits_per_code=run["epoch_nats"] / run["epoch_steps"] / math.log(2))
        run.update(epoch_nats=0.0, epoch_steps=0)

    def _step(self, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
              codes: Tensor, labels: Tensor | None, *, model: nn.Module, loop: FitLoop,
              shard: Shard, precision: str) -> float:
        with train_autocast(self.device, precision):
            loss = loop.mean(self.train_loss(codes, labels, model=model, shard=shard), shard)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        opt.step()
        sched.step()
        return loop.value(loss)

    def mean_nats_per_code(self, split: CodeSet, done: list[Tensor] = (),
                           keep: Callable[[list[Tensor]], None] | None = None) -> float:
        """Mean nats per code of `split`, `eval_batch_size` grids at a time (as `log_prob`
        batches, so the same values). `done`: the per-grid log-likelihoods (CPU) of the first
        batches, already scored; `keep` is handed the list after each batch but the last."""
        parts, size = list(done), self.config.eval_batch_size
        for s in range(sum(len(p) for p in parts), len(split), size):
            labels = None if split.labels is None else split.labels[s:s + size]
            parts.append(self.log_prob(split.codes[s:s + size], labels).cpu())
            if keep is not None and s + size < len(split):
                keep(parts)
        total = -torch.cat(parts).sum()
        return float(total) / (len(split) * self.grid[0] * self.grid[1])

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict(state)
        self.net.eval()


def val_subset(val: CodeSet, n: int) -> CodeSet:
    """At most n grids of val (0: all of them), a fixed choice (seeded 0, whatever the fit's
    seed) kept in stored order."""
    if n <= 0 or n >= len(val):
        return val
    pick = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return CodeSet(val.codes[pick], val.num_codes, None if val.labels is None else val.labels[pick])


def lr_lambda(cfg: FitConfig, total_steps: int):
    warmup = max(1, round(cfg.warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
