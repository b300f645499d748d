"""Shared machinery of the autoregressive priors (raster order over the code grid).

A subclass supplies `build_net()`: an `nn.Module` whose `forward(codes, labels)` returns
teacher-forced logits (N, K, h, w) and whose `stepper(n, labels)` returns a cached `Stepper`.
This base class turns the logits into an exact `log_prob`, trains the net (`fit`), and samples
either through the cache (default) or naively, one full forward per position.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from priors.base import (Checkpoint, CodeSet, NullCheckpoint, Prior, PriorError, Progress,
                         gumbel_noise, require, seeded, step_budget)
from priors.training import FitLoop, Shard, data_parallel


@dataclass(frozen=True)
class FitConfig:
    """Training fields shared by every autoregressive prior; subclass Configs add the net."""

    epochs: int = 10  # passes over the training grids; the best epoch on val is kept
    batch_size: int = 32  # grids per optimisation step
    lr: float = 1e-3  # peak AdamW learning rate, reached after the linear warm-up
    min_lr_frac: float = 0.05  # cosine decay ends at lr * min_lr_frac
    warmup_frac: float = 0.05  # share of all steps spent in linear warm-up from 0
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_batch_size: int = 256  # grids per forward in log_prob and validation (memory only)
    max_steps: int = 0  # cap on optimisation steps (0: epochs decide); bounds a preset's cost on big datasets

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


class Stepper(Protocol):
    """Incremental evaluation in raster order: `logits_at(i, j)` sees only codes written
    (by `write`) at positions before (i, j)."""

    def logits_at(self, i: int, j: int) -> Tensor: ...  # (n, K)
    def write(self, i: int, j: int, codes: Tensor) -> None: ...  # codes (n,)


class NaiveStepper:
    """The reference path: one full teacher-forced forward per position."""

    def __init__(self, net: nn.Module, codes: Tensor, labels: Tensor | None) -> None:
        self.net, self.codes, self.labels = net, codes, labels  # codes (n, h, w), filled as we go

    def logits_at(self, i: int, j: int) -> Tensor:
        return self.net(self.codes, self.labels)[:, :, i, j]  # (n, K)

    def write(self, i: int, j: int, codes: Tensor) -> None:
        self.codes[:, i, j] = codes


class CausalConv2d(nn.Module):
    """A conv with explicit padding (left, right, top, bottom) and a fixed 0/1 kernel mask.

    `forward` is the teacher-forced path; `cache()` gives the `ConvCache` that cached sampling
    fills in and evaluates position by position.
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int],
                 pad: tuple[int, int, int, int], mask: Tensor) -> None:
        super().__init__()
        assert mask.shape == kernel
        self.conv = nn.Conv2d(c_in, c_out, kernel)
        self.pad = pad
        self.register_buffer("mask", mask.float(), persistent=False)  # (kh, kw)

    @classmethod
    def raster(cls, c_in: int, c_out: int, k: int, kind: str) -> "CausalConv2d":
        """k x k 'same' conv seeing raster-earlier positions; kind 'A' excludes the centre."""
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (kind == "B"):] = 0
        mask[k // 2 + 1:] = 0
        return cls(c_in, c_out, (k, k), (k // 2, k // 2, k // 2, k // 2), mask)

    def weight(self) -> Tensor:
        return self.conv.weight * self.mask  # (c_out, c_in, kh, kw)

    def forward(self, x: Tensor) -> Tensor:  # (N, c_in, h, w) -> (N, c_out, h, w)
        return F.conv2d(F.pad(x, self.pad), self.weight(), self.conv.bias)

    def cache(self, n: int, grid: tuple[int, int], like: Tensor) -> "ConvCache":
        return ConvCache(self, n, grid, like)


class ConvCache:
    """Cached evaluation of one `CausalConv2d` in raster order (Ramachandran et al. 2017).

    The layer's input lives in a zero-padded channels-last buffer (n, h+pads, w+pads, c_in)
    that the sampler fills position by position (through `slots`). Kernel rows above the
    current row only see finished rows, so `start_row(i)` computes their part of the whole output row i at once
    (one im2col copy and one matmul, plus the bias and any per-row `extra`); `at(j)` then adds
    the current row's taps, a run of positions ending at (or just before) j, as one addmm on a
    strided window of the buffer. Per-row tensors are unbound into lists up front, so the
    per-position path runs no indexing ops: at small batch sizes it is bound by per-op
    overhead, not FLOPs.
    """

    def __init__(self, conv: CausalConv2d, n: int, grid: tuple[int, int], like: Tensor) -> None:
        left, right, top, bottom = conv.pad
        mask = conv.mask
        taps = int(mask[top].sum())
        if mask[top + 1:].any() or not bool(mask[top, :taps].all()) or not bool(mask[:top].all()):
            raise ValueError("ConvCache needs full rows above the current one, a left-aligned "
                             "run of taps in it and nothing below")
        self.n, self.w, self.top, self.left, self.taps = n, grid[1], top, left, taps
        self.c_in, self.c_out = conv.conv.in_channels, conv.conv.out_channels
        weight = conv.weight()  # (c_out, c_in, kh, kw)
        self.kh, self.kw = weight.shape[2:]
        flat = weight.permute(2, 3, 1, 0)  # (kh, kw, c_in, c_out): im2col order
        self.w_rows = flat.reshape(-1, self.c_out)  # all kernel rows, for full_row
        self.w_above = flat[:top].reshape(-1, self.c_out)  # (top*kw*c_in, c_out)
        self.w_now = flat[top, :taps].reshape(-1, self.c_out)  # (taps*c_in, c_out)
        self.bias = conv.conv.bias if conv.conv.bias is not None else like.new_zeros(self.c_out)
        self.buf = like.new_zeros(n, grid[0] + top + bottom, grid[1] + left + right, self.c_in)
        self.above: list[Tensor] = []  # per position j of the current row: (n, c_out)
        self.windows: list[Tensor] = []  # (n, taps*c_in) views: the current-row taps of j
        self.slots: list[Tensor] = []  # (n, c_in) views: where the input at (i, j) goes

    def _rows_matmul(self, first: int, n_rows: int, weight: Tensor) -> Tensor:
        """(w, n, c_out): bias + buffer rows first.. first+n_rows-1 (padded coordinates)
        convolved with `weight` (n_rows*kw*c_in, c_out), every output position of a row."""
        w, n, c, b = self.w, self.n, self.c_in, self.buf
        cols = b[:, first:first + n_rows].as_strided(
            (w, n, n_rows, self.kw, c), (c, b.stride(0), b.stride(1), c, 1),
            b.storage_offset() + first * b.stride(1))  # window of output j, no copy yet
        return torch.addmm(self.bias, cols.reshape(w * n, -1), weight).view(w, n, self.c_out)

    def start_row(self, i: int, extra: Tensor | None = None) -> None:
        """Prepare output row i; the rows above i must be complete in the buffer. `extra`,
        broadcastable to (w, n, c_out), is added to every position of the row."""
        n, w, c = self.n, self.w, self.c_in
        if self.top:
            above = self._rows_matmul(i, self.top, self.w_above)  # (w, n, c_out)
        else:
            above = self.bias.expand(w, n, -1)
        if extra is not None:
            above = above + extra
        elif self.taps == 0 and not self.top:
            above = above.clone()  # `at` hands these out to be updated in place
        self.above = list(above.unbind(0))
        row = self.buf[:, i + self.top]  # (n, w+pads, c_in)
        self.windows = list(row.as_strided((w, n, self.taps * c), (c, row.stride(0), 1),
                                           row.storage_offset()).unbind(0))
        self.slots = list(row[:, self.left:self.left + w].unbind(1))

    def at(self, j: int) -> Tensor:
        """(n, c_out): the conv's output at (i, j), a tensor the caller may update in place."""
        if self.taps == 0:
            return self.above[j]  # used once per row: safe to hand out
        return torch.addmm(self.above[j], self.windows[j], self.w_now)

    def row_input(self, i: int) -> Tensor:  # (n, w, c_in): the unpadded input row i, writable
        return self.buf[:, i + self.top, self.left:self.left + self.w]

    def full_row(self, i: int) -> Tensor:
        """(w, n, c_out): output row i with every kernel row; rows up to i must be complete."""
        return self._rows_matmul(i, self.kh, self.w_rows)


def transposed(layer: nn.Linear, out_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(W^T (in, out), bias) of a Linear for addmm, optionally scaling each output."""
    weight, bias = layer.weight, layer.bias
    if out_scale is not None:
        weight, bias = weight * out_scale[:, None], bias * out_scale
    return weight.t(), bias


def pointwise(layer: nn.Linear, x: Tensor) -> Tensor:
    """A 1x1 conv as a Linear on the channel axis: (N, C, h, w) -> (N, C', h, w)."""
    return layer(x.movedim(1, -1)).movedim(-1, 1)


class AutoregressivePrior(Prior):
    """Exact likelihood from teacher-forced logits; fit loop; cached and naive sampling."""

    def __init__(self, config, *, num_codes: int, grid: tuple[int, int], num_classes: int = 0,
                 codebook: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(config, num_codes=num_codes, grid=grid, num_classes=num_classes,
                         codebook=codebook, device=device)
        with seeded(0, self.device):  # a fresh instance is the same net every time
            self.net = self.build_net().to(self.device).eval()

    @abstractmethod
    def build_net(self) -> nn.Module:
        """The network: `forward(codes (N,h,w), labels) -> (N,K,h,w)`, `from_embedding(x
        (N,E,h,w), labels)` (the same after the code embedding), `stepper(n, labels)`."""

    # -- likelihood ----------------------------------------------------------------------------

    def logits(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (N, K, h, w): position (i, j) sees only codes before it."""
        codes = self.check_codes(codes)
        return self.net(codes, self.check_labels(labels, codes.shape[0]))

    @torch.no_grad()
    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, codes.shape[0])
        self.net.eval()
        out = []
        for s in range(0, codes.shape[0], self.config.eval_batch_size):
            c = codes[s:s + self.config.eval_batch_size]
            lab = None if labels is None else labels[s:s + self.config.eval_batch_size]
            out.append(-self._nll(c, lab).double().sum(dim=(1, 2)))
        return torch.cat(out) if out else codes.new_zeros(0, dtype=torch.float64)  # (N,) nats

    def _nll(self, codes: Tensor, labels: Tensor | None, net: nn.Module | None = None) -> Tensor:
        logits = (net or self.net)(codes, labels).float()  # (N, K, h, w)
        return F.cross_entropy(logits, codes, reduction="none")  # (N, h, w) nats

    # -- training ------------------------------------------------------------------------------

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
        codes = self.check_codes(train.codes)
        labels = self.check_labels(train.labels, len(train))
        total = step_budget(len(train), cfg.batch_size, cfg.epochs, cfg.max_steps)
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
                shard = loop.batch(step)
                self.net.train()
                run["epoch_nats"] += self._step(opt, sched, codes[shard.idx],
                                                None if labels is None else labels[shard.idx],
                                                model=model, loop=loop, shard=shard)
                run["epoch_steps"] += 1
                if loop.epoch_end(step):
                    self._end_epoch(val, loop, run, loop.epoch(step))
        finally:
            progress.stop()
        loop.finish(self.net)
        self.net.load_state_dict(run["best_state"])
        self.net.eval()
        return {"val_bits_per_code": run["best_nats"] / math.log(2),
                "best_epoch": float(run["best_epoch"]), "train_wall_s": loop.wall_s()}

    def _end_epoch(self, val: CodeSet, loop: FitLoop, run: dict[str, Any], epoch: int) -> None:
        """Score val (on every rank, all of it: the same number whatever the world size);
        keep the best epoch's weights."""
        val_nats = self.mean_nats_per_code(val)
        if val_nats < run["best_nats"]:
            run.update(best_nats=val_nats, best_epoch=epoch,
                       best_state=copy.deepcopy(self.net.state_dict()))
        loop.advance(val_bits_per_code=val_nats / math.log(2),
                     train_bits_per_code=run["epoch_nats"] / run["epoch_steps"] / math.log(2))
        run.update(epoch_nats=0.0, epoch_steps=0)

    def _step(self, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
              codes: Tensor, labels: Tensor | None, *, model: nn.Module, loop: FitLoop,
              shard: Shard) -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = loop.mean(self._nll(codes, labels, model), shard)  # nats / code
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        opt.step()
        sched.step()
        return loop.value(loss)

    def mean_nats_per_code(self, split: CodeSet) -> float:
        total = -self.log_prob(split.codes, split.labels).sum()
        return float(total) / (len(split) * self.grid[0] * self.grid[1])

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator, labels: Tensor | None = None,
               use_cache: bool = True) -> Tensor:
        """(n, h, w) int64. `use_cache=False` runs one full forward per position (reference)."""
        labels = self.check_labels(labels, n)
        self.net.eval()
        codes = torch.zeros(n, *self.grid, dtype=torch.int64, device=self.device)
        stepper = self.net.stepper(n, labels) if use_cache else NaiveStepper(self.net, codes, labels)
        return self._sample_loop(stepper, codes, generator)

    def _sample_loop(self, stepper: Stepper, codes: Tensor, generator: torch.Generator) -> Tensor:
        """Raster order over the grid, into `codes`. The Gumbel noise of a row is drawn at once:
        the same draws as one call per position."""
        n, (h, w) = codes.shape[0], self.grid
        drawn = codes.new_zeros(h * w, n)  # raster position -> the n codes drawn there
        out = drawn.unbind(0)
        for p in range(h * w):
            i, j = divmod(p, w)
            if j == 0:
                noise = gumbel_noise((w, n, self.num_codes), generator, codes.device).unbind(0)
            torch.argmax(stepper.logits_at(i, j).float() + noise[j], dim=-1, out=out[p])
            stepper.write(i, j, out[p])
        codes.copy_(drawn.view(h, w, n).permute(2, 0, 1))
        return codes

    @torch.no_grad()
    def stepwise_logits(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """(N, K, h, w) logits of `codes` computed through the sampling cache, position by
        position; equals `logits(codes)` up to float error (tested)."""
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, codes.shape[0])
        self.net.eval()
        stepper = self.net.stepper(codes.shape[0], labels)
        out = []
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                out.append(stepper.logits_at(i, j))
                stepper.write(i, j, codes[:, i, j])
        return torch.stack(out, dim=-1).unflatten(-1, self.grid)

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict(state)
        self.net.eval()


def lr_lambda(cfg: FitConfig, total_steps: int):
    warmup = max(1, round(cfg.warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return factor

