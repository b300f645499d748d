"""What a resumable, distributed training loop needs, shared by the `vqvae` and `priors`
libraries (which do not import each other): torch.distributed helpers that are the
single-process identity without an initialised process group, so the same code runs under
`torchrun` and without it; the progress and checkpoint protocols a caller passes in; and a
restorable epoch order. Imports torch only."""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# --- torch.distributed -----------------------------------------------------------------------


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum_(t: Tensor) -> Tensor:
    """`t` summed over ranks, in place (returned for chaining)."""
    if rank_world()[1] > 1:
        dist.all_reduce(t)
    return t


def gather_rows(t: Tensor) -> Tensor:
    """(m, ...) on each rank -> (world * m, ...) on every rank, in rank order."""
    world = rank_world()[1]
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def from_rank0(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled; e.g. a checkpoint only rank 0 reads)."""
    if rank_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def data_parallel(net: nn.Module) -> nn.Module:
    """`net` in DistributedDataParallel under torch.distributed (its parameters, already on
    their device, are broadcast from rank 0), else `net` itself."""
    return DistributedDataParallel(net) if rank_world()[1] > 1 else net


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


# --- what a loop reports to and saves into ---------------------------------------------------


class Progress(Protocol):
    """What training (a prior's fit, the backbone's loop) reports to. `bench` passes a rich-backed
    one; tests pass `NullProgress`."""

    def start(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1, **metrics: float) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1, **metrics: float) -> None:
        pass

    def stop(self) -> None:
        pass


class Checkpoint(Protocol):
    """Where a training loop keeps its resumable state. `bench` passes one backed by its
    artefact store; `NullCheckpoint` (the default) never saves. Under torch.distributed only
    rank 0 calls it: every rank holds the same state at a step boundary."""

    def load(self) -> dict[str, Any] | None: ...  # last saved training state, or None: start fresh
    def save(self, state: dict[str, Any]) -> None: ...  # atomic; round-trips through torch.save /
    # torch.load(weights_only=True): tensors, numbers, strings, None, lists, tuples and dicts
    def due(self, step: int) -> bool: ...  # save now, after `step` finished steps?


class NullCheckpoint:
    def load(self) -> dict[str, Any] | None:
        return None

    def save(self, state: dict[str, Any]) -> None:
        pass

    def due(self, step: int) -> bool:
        return False


# --- training precision ----------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16", "auto")  # training precisions; `resolve_precision` maps auto


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles): the CPUs on which
    bf16 autocast is a speed-up rather than an emulation."""
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


def train_autocast(device: torch.device, precision: str):
    """bf16 autocast on `device` for a resolved precision 'bf16'; nothing for 'fp32'."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# --- batches ---------------------------------------------------------------------------------


class EpochOrder:
    """One permutation of range(n) per epoch, drawn from `generator`, cut into `per_epoch`
    batches of `batch_size`; steps are asked for in increasing order. Its state is the
    generator before the current epoch's permutation and the permutations drawn, so a restored
    order redraws that permutation and continues mid-epoch."""

    def __init__(self, n: int, batch_size: int, per_epoch: int,
                 generator: torch.Generator) -> None:
        self.n, self.batch_size, self.per_epoch = n, batch_size, per_epoch
        self.generator = generator
        self.drawn, self.before = 0, generator.get_state()
        self.perm = torch.empty(0, dtype=torch.int64)

    def batch(self, step: int) -> Tensor:  # (batch_size,) int64 rows, CPU
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


# --- time ----------------------------------------------------------------------------------

class Stopwatch:
    """A training's wall and CPU seconds (this process, all its threads), continued across
    resumes: `Stopwatch(**elapsed)` goes on from a checkpoint's `elapsed()`. Also its core
    seconds, wall seconds x torch threads summed over the processes that ran it, so that a
    resume under another `--threads` divides each part's CPU time by the cores it had. cpu_s
    None (a checkpoint written before trainings kept CPU seconds): they stay unknown; core_s
    None (written before they kept core seconds): the part before ran at this thread count."""

    def __init__(self, wall_s: float = 0.0, cpu_s: float | None = 0.0,
                 core_s: float | None = None) -> None:
        self.wall0 = time.perf_counter() - wall_s
        self.cpu0 = None if cpu_s is None else time.process_time() - cpu_s
        self.resumed_wall_s = wall_s
        self.resumed_core_s = wall_s * torch.get_num_threads() if core_s is None else core_s

    def wall_s(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu_s(self) -> float | None:
        return None if self.cpu0 is None else time.process_time() - self.cpu0

    def core_s(self) -> float:
        return self.resumed_core_s + (self.wall_s() - self.resumed_wall_s) * torch.get_num_threads()

    def elapsed(self) -> dict[str, float | None]:
        """What a checkpoint keeps, for the next run's Stopwatch(**elapsed)."""
        return {"wall_s": self.wall_s(), "cpu_s": self.cpu_s(), "core_s": self.core_s()}

    def summary(self, device: torch.device, world: int) -> dict[str, float]:
        return cpu_times(self.wall_s(), self.cpu_s(), device, world, core_s=self.core_s())


def cpu_times(wall_s: float, cpu_s: float | None, device: torch.device, world: int, *,
              core_s: float | None = None) -> dict[str, float]:
    """A training's wall seconds and torch threads and, for a one-process fit on the CPU, its
    CPU seconds and `train_cpu_share` = CPU seconds / core seconds (wall seconds x torch
    threads, or `core_s` for a training resumed under other thread counts): near 1 when its
    threads had the cores to themselves, about half beside another job of as many threads (a
    load average taken before and after misses a job that ran only in between).
    Left out on CUDA (the CPU waits on the GPU), under DDP (the other ranks share the cores)
    and where a resumed checkpoint did not keep the CPU seconds."""
    threads = torch.get_num_threads()
    core_s = wall_s * threads if core_s is None else core_s
    times = {"train_wall_s": wall_s, "train_threads": float(threads)}
    if cpu_s is not None and core_s > 0 and device.type == "cpu" and world == 1:
        times |= {"train_cpu_s": cpu_s, "train_cpu_share": round(cpu_s / core_s, 3)}
    return times


__all__ = ["rank_world", "all_reduce_sum_", "gather_rows", "from_rank0", "data_parallel",
           "cpu_copy", "Progress", "NullProgress", "Checkpoint", "NullCheckpoint", "EpochOrder",
           "PRECISIONS", "native_bf16_cpu", "resolve_precision", "train_autocast", "cpu_times",
           "Stopwatch"]
