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
import time
from typing import Any, Iterator, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from priors.base import Checkpoint, NullCheckpoint, Progress, epoch_count


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_parallel(net: nn.Module) -> nn.Module:
    """`net` in DistributedDataParallel under torch.distributed (its parameters, already on
    their device, are broadcast from rank 0), else `net` itself."""
    return DistributedDataParallel(net) if rank_world()[1] > 1 else net


PRECISIONS = ("fp32", "bf16", "auto")  # training precisions; `resolve_precision` maps auto


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles): the CPUs on which
    bf16 autocast is a speed-up rather than an emulation. (vqvae.train's twin: the libraries
    do not import each other.)"""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device, *, cpu_auto: str = "bf16") -> str:
    """'fp32' or 'bf16': `precision` (one of PRECISIONS) as it runs on `device`. auto is bf16
    on CUDA, `cpu_auto` on a CPU with native bf16 (a net's measured choice), fp32 on other CPUs;
    bf16 asked for on a CPU without native bf16 is an error."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    native = device.type == "cuda" or (device.type == "cpu" and native_bf16_cpu())
    if precision == "auto":
        if not native:
            return "fp32"
        return cpu_auto if device.type == "cpu" else "bf16"
    if precision == "bf16" and not native:
        raise ValueError(f"precision 'bf16' asked for, but this {device.type} has no native bf16 "
                         f"(AVX512-BF16 or AMX); use precision fp32 or auto")
    return precision


def cpu_copy(obj: Any) -> Any:
    """Tensors in nested dicts / lists / tuples copied to the CPU, detached: a state that
    later steps cannot change and that loads on any rank's device."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class EpochOrder:
    """One permutation of range(n) per epoch, drawn from `generator`, cut into `per_epoch`
    batches of `batch_size` (the last may be short); steps are asked for in increasing order.
    Its state is the generator before the current epoch's permutation and the permutations
    drawn, so a restored order redraws that permutation and continues mid-epoch."""

    def __init__(self, n: int, batch_size: int, per_epoch: int,
                 generator: torch.Generator) -> None:
        self.n, self.batch_size, self.per_epoch = n, batch_size, per_epoch
        self.generator = generator
        self.drawn, self.before = 0, generator.get_state()
        self.perm = torch.empty(0, dtype=torch.int64)

    def batch(self, step: int) -> Tensor:  # (<= batch_size,) int64 rows, CPU
        epoch, i = divmod(step, self.per_epoch)
        while self.drawn <= epoch:
            self.before = self.generator.get_state()
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.drawn += 1
        return self.perm[i * self.batch_size:(i + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.before, "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.before, self.drawn = state["generator"], max(0, state["drawn"] - 1)


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
        self.step, self.history, self.started = 0, [], time.perf_counter()
        self.parts: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    def start(self, description: str, parts: dict[str, Any],
              extra: dict[str, Any]) -> dict[str, Any]:
        """Load `parts` (objects with state_dict / load_state_dict) and the rest from the last
        checkpoint if there is one, start the progress bar (one tick per epoch) at the epochs
        done, and return the fit's running values: `extra`, or the saved ones."""
        self.parts, self.extra = parts, extra
        state = self.checkpoint.load()
        if self.world > 1:
            box = [state]
            dist.broadcast_object_list(box, src=0)
            state = box[0]
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
        self.started = time.perf_counter() - state["wall_s"]
        self.extra.update(state["extra"])

    def state(self) -> dict[str, Any]:
        """Everything `start` needs to continue after the steps done so far."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return cpu_copy({"step": self.step, "history": list(self.history), "extra": self.extra,
                         "wall_s": self.wall_s(),
                         "parts": {k: p.state_dict() for k, p in self.parts.items()},
                         "order": self.order.state_dict(),
                         "rng": {"cpu": torch.get_rng_state(), "cuda": cuda}})

    def steps(self) -> Iterator[int]:
        """The steps left, in order; after each (its epoch end included), rank 0 saves the
        state when the checkpoint says it is due."""
        while self.step < self.total:
            yield self.step
            self.step += 1
            if self.checkpoint.due(self.step):
                self.checkpoint.save(self.state())

    def batch(self, step: int) -> Shard:
        rows = self.order.batch(step)
        pos = torch.arange(len(rows)).tensor_split(self.world)[self.rank]
        count = len(pos)
        if count == 0:  # a global batch smaller than the world: every rank must still step
            pos = torch.zeros(1, dtype=torch.int64)
        return Shard(rows[pos].to(self.device), pos.to(self.device), count, len(rows))

    def wall_s(self) -> float:
        """Seconds spent in this fit so far, the runs before a resume included."""
        return time.perf_counter() - self.started

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
