"""The loop the trainable priors share: shuffled minibatches, resumable state, DDP.

`FitLoop` hands a fit its optimisation steps in order and each step's minibatch (an epoch is
one shuffled pass; its last batch may be short) and, after every step the checkpoint asks
for, saves what a killed fit needs to continue bitwise: the `parts` it was given (nets,
optimisers, schedulers), the data-order position, torch's global RNG (the noise drawn inside
`seeded`: CPU, and the device's on CUDA), the progress history and the fit's running values.

Under torch.distributed every rank runs every step on its slice of the same global batch
(drawn from the same seed) with its nets in DistributedDataParallel, so the ranks keep the
same state: rank 0 alone saves, and its checkpoint resumes every rank.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from priors.base import epoch_count
from trainkit import (Checkpoint, EpochOrder, NullCheckpoint, Progress, Stopwatch, cpu_copy,
                      from_rank0, rank_world)


class Shard(NamedTuple):
    """This rank's part of one global batch."""

    idx: Tensor  # (m,) training rows, on the fit's device
    pos: Tensor  # (m,) their positions in the global batch (for noise drawn per global batch)
    count: int  # the first `count` items are this rank's; a rank with none gets one stand-in
    size: int  # items in the global batch


class FitLoop:
    """Steps, batches, progress and checkpoints of one fit (see the module docstring)."""

    def __init__(self, *, n: int, batch_size: int, total_steps: int, seed: int,
                 device: torch.device, checkpoint: Checkpoint, progress: Progress) -> None:
        self.per_epoch = math.ceil(n / batch_size)
        self.order = EpochOrder(n, batch_size, self.per_epoch, torch.Generator().manual_seed(seed))
        self.epochs = epoch_count(n, batch_size, total_steps)
        self.total, self.device = total_steps, device
        self.rank, self.world = rank_world()
        # rank 0 alone reads and writes the checkpoint; the others get its state
        self.checkpoint = checkpoint if self.rank == 0 else NullCheckpoint()
        self.progress = progress
        self.step, self.history, self.clock = 0, [], Stopwatch()
        self.within = False  # restored from a save inside a step's epoch end (`save_within_step`)
        self.parts: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    def start(self, description: str, parts: dict[str, Any],
              extra: dict[str, Any]) -> dict[str, Any]:
        """Load `parts` (objects with state_dict / load_state_dict) and the rest from the last
        checkpoint if there is one, start the progress bar (one tick per epoch) at the epochs
        done, and return the fit's running values: `extra`, or the saved ones."""
        self.parts, self.extra = parts, extra
        state = from_rank0(self.checkpoint.load())
        if state is not None:
            self._restore(state)
            description += f" (resumed at step {self.step})"
        self.progress.start(description, total=self.epochs)
        for metrics in self.history:
            self.progress.advance(1, **metrics)
        return self.extra

    def _restore(self, state: dict[str, Any]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state["parts"][name])
        self.order.load_state_dict(state["order"])
        torch.set_rng_state(state["rng"]["cpu"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step, self.history = state["step"], state["history"]
        self.within = bool(state.get("within_step", False))
        self.clock = Stopwatch(state["wall_s"], state.get("cpu_s"),  # older ones lack cpu_s,
                               state.get("core_s"))  # core_s
        self.extra.update(state["extra"])

    def state(self) -> dict[str, Any]:
        """Everything `start` needs to continue after the steps done so far."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return cpu_copy({"step": self.step, "history": list(self.history), "extra": self.extra,
                         **self.clock.elapsed(),
                         "parts": {k: p.state_dict() for k, p in self.parts.items()},
                         "order": self.order.state_dict(),
                         "rng": {"cpu": torch.get_rng_state(), "cuda": cuda}})

    def steps(self) -> Iterator[int]:
        """The steps left, in order; after each (its epoch end included), rank 0 saves the
        state when the checkpoint says it is due, and after the last one always: what follows
        the fit (its test bits/code, resumable on its own) then never replays training, which
        on CUDA need not give the same weights again."""
        while self.step < self.total:
            yield self.step
            self.step += 1
            if self.checkpoint.due(self.step) or self.step == self.total:
                self.checkpoint.save(self.state())

    def save_within_step(self) -> None:
        """Inside the current step, after its update, while its epoch end runs (NetPrior: the
        val pass, one batch at a time): save the state when the checkpoint is due, with what
        `extra` holds of the epoch end so far. The update and the data order are done and the
        epoch end draws no random numbers, so a resumed fit skips the update
        (`update_done`) and finishes the epoch end from `extra`, bitwise as if never killed."""
        if self.checkpoint.due(self.step + 1):
            self.checkpoint.save(self.state() | {"within_step": True})

    def update_done(self) -> bool:
        """Whether this step's update was done before the kill it resumes from (true once, for
        the first step after a resume from `save_within_step`): only its epoch end is left."""
        done, self.within = self.within, False
        return done

    def batch(self, step: int) -> Shard:
        rows = self.order.batch(step)
        pos = torch.arange(len(rows)).tensor_split(self.world)[self.rank]
        count = len(pos)
        if count == 0:  # a global batch smaller than the world: every rank must still step
            pos = torch.zeros(1, dtype=torch.int64)
        return Shard(rows[pos].to(self.device), pos.to(self.device), count, len(rows))

    def times(self) -> dict[str, float]:
        """What a fit's summary says of its time, the runs before a resume included (floats, as
        a fit's summary holds)."""
        return self.clock.summary(self.device, self.world)

    def epoch(self, step: int) -> int:
        return step // self.per_epoch

    def epoch_end(self, step: int) -> bool:
        return (step + 1) % self.per_epoch == 0 or step + 1 == self.total

    def advance(self, **metrics: float) -> None:
        """One progress tick (an epoch), its metrics kept for a resumed bar."""
        self.history.append({k: float(v) for k, v in metrics.items()})
        self.progress.advance(1, **metrics)

    def mean(self, per_item: Tensor, shard: Shard) -> Tensor:
        """The global batch's mean of per-item losses (m, ...), as this rank's share:
        DistributedDataParallel averages gradients over ranks, so shares are scaled by the
        world size. One process: `per_item.mean()`."""
        if self.world == 1:
            return per_item.mean()
        return per_item[:shard.count].sum() * (self.world / (shard.size * per_item[0].numel()))

    def finish(self, *nets: nn.Module) -> None:
        """Rank 0's buffers (batch-norm statistics: each rank's come from its own slices) in
        every rank's `nets`, so that all ranks end with the same weights."""
        if self.world > 1:
            for net in nets:
                for buffer in net.buffers():
                    dist.broadcast(buffer, src=0)

    def value(self, loss: Tensor) -> float:
        """The global batch's value of a loss made by `mean` (the ranks' shares summed)."""
        if self.world == 1:
            return float(loss.detach())
        total = loss.detach().clone()
        dist.all_reduce(total)
        return float(total) / self.world
