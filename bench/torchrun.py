"""`bench run` under torchrun: the ranks of one run and how they share its stages.

`torchrun --nproc-per-node N -m bench run ...` starts N copies of the same command with RANK,
WORLD_SIZE and LOCAL_RANK set. `session` joins them in a process group (gloo on CPU, NCCL on
CUDA, where rank r uses cuda:LOCAL_RANK) and yields their `Ranks`; without torchrun it yields
the one-process `Ranks()` and every helper below is the plain call.

Who does what: training (backbone, prior fit) and sampling run on every rank; everything that
cannot be split (data cache, code export, extractor, scoring, records) runs on rank 0, which
alone writes to the store. The other ranks hold a read-only store (`Store(writer=False)`) and
read what rank 0 committed after it says so (`lead_first`). Rank 0's decisions (build or
reuse) reach the others through `share`; an error on rank 0 before such a point is raised on
every rank, so none waits for a message that will not come. Every wait is bounded by the
session's timeout; torchrun itself stops all ranks when one of them exits with an error.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

import torch
import torch.distributed as dist

from bench.errors import BenchError
from bench.progress import err_console

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun for every rank it starts


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one run; `Ranks()` is the one-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # rank on this node: picks the GPU
    group: Any = None  # gloo group for decisions and notes (CPU objects, also beside NCCL)

    @property
    def lead(self) -> bool:
        """Rank 0: writes the store, scores, prints results."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK for CUDA under torchrun, else `device`."""
        if device.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, fn: Callable[[], T] | None, *, tag: str) -> T:
        """Rank 0's `fn()` on every rank (`fn` runs on rank 0 only; the others may pass None).
        An error of `fn` on rank 0 is raised there and, as a BenchError naming it, on the others.
        `tag` names the point of the run: every rank must reach the same points in order."""
        if self.world == 1:
            return fn()
        box: list[Any] = [None]
        if self.lead:
            try:
                box = [(tag, "ok", fn())]
            except BaseException as e:
                self._broadcast([(tag, "error", f"{type(e).__name__}: {e}")])
                raise
        sent, kind, value = self._broadcast(box)[0]
        if kind == "error":  # rank 0 may have failed before reaching this rank's point
            raise BenchError(f"rank 0 failed, so rank {self.rank} stops too: {value}")
        assert sent == tag, f"rank {self.rank} is at {tag!r}, rank 0 at {sent!r}: out of step"
        return value

    def lead_first(self, fn: Callable[[], T], *, tag: str) -> T:
        """`fn()` on rank 0, then on the others once rank 0 has finished it (with a read-only
        store they read what it committed); rank 0's error is raised on every rank."""
        if self.world == 1:
            return fn()
        if self.lead:
            box: list[T] = []
            self.share(lambda: box.append(fn()), tag=tag)
            return box[0]
        self.share(None, tag=tag)
        return fn()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's picklable `obj` on rank 0, in rank order; None on the others."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.lead else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def _broadcast(self, box: list[Any]) -> list[Any]:
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box


def torchrun_env(environ: Mapping[str, str]) -> Ranks | None:
    """The Ranks torchrun's variables describe (no group yet); None when they are not set."""
    if not any(name in environ for name in ENV):
        return None
    missing = [name for name in ENV if name not in environ]
    if missing:
        raise BenchError(f"torchrun variables {', '.join(ENV)} must be set together; "
                         f"{', '.join(missing)} missing (launch with torchrun, or set none)")
    try:
        rank, world, local = (int(environ[name]) for name in ENV)
    except ValueError:
        raise BenchError(f"torchrun variables {', '.join(ENV)} must be integers, got "
                         f"{[environ[n] for n in ENV]}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise BenchError(f"torchrun variables need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, "
                         f"got RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return Ranks(rank=rank, world=world, local_rank=local)


def check_batches(world: int, batch_sizes: Mapping[str, int]) -> None:
    """Every rank gets an equal share of each global batch: each size a multiple of `world`."""
    for what, size in batch_sizes.items():
        if size % world:
            raise BenchError(f"{what} batch_size {size} does not split over {world} ranks; "
                             f"launch a number of ranks that divides {size}, or use a preset "
                             f"whose batch sizes {world} divides")


@contextmanager
def session(device: torch.device, *, timeout_s: float,
            environ: Mapping[str, str] | None = None) -> Iterator[Ranks]:
    """The ranks of this run: a process group over torchrun's ranks (destroyed on exit), or
    `Ranks()` when torchrun did not start this process (or started only one)."""
    ranks = torchrun_env(os.environ if environ is None else environ)
    if ranks is None or ranks.world == 1:
        yield Ranks()
        return
    if not dist.is_available():
        raise BenchError("torchrun started this run, but this torch build has no "
                         "torch.distributed; run `bench run` without torchrun")
    if dist.is_initialized():
        raise BenchError("a torch.distributed process group is already initialised in this "
                         "process; `bench run` under torchrun sets up its own")
    timeout = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda":
        use_gpu(ranks.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    quiet = err_console.quiet
    try:
        group = dist.new_group(backend="gloo", timeout=timeout) if device.type == "cuda" else None
        err_console.quiet = quiet or not ranks.lead  # one rank reports progress and notes
        yield Ranks(rank=ranks.rank, world=ranks.world, local_rank=ranks.local_rank, group=group)
        # every rank done before any closes its connections: a rank that tore down the group
        # while another still held it open has aborted that one in gloo ("terminate called
        # without an active exception", SIGABRT, seen once in 20-odd two-rank test runs)
        dist.barrier(group=group)
    except RuntimeError as e:
        if "timed out" not in str(e).lower():
            raise
        raise BenchError(f"rank {ranks.rank} waited over --ddp-timeout {timeout_s:g} s for the "
                         f"other ranks ({str(e).splitlines()[0][-120:]}); another rank failed "
                         f"or is stuck, or its stage takes longer: raise --ddp-timeout") from None
    finally:
        err_console.quiet = quiet
        dist.destroy_process_group()


def use_gpu(local_rank: int) -> None:
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise BenchError(f"LOCAL_RANK {local_rank} has no GPU: this node has {count}; launch "
                         f"at most {count} ranks per node (--nproc-per-node)")
    torch.cuda.set_device(local_rank)
