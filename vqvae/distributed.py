"""torch.distributed for backbone training. Without an initialised process group every helper
is the single-process identity, so the same code runs under `torchrun` and without it."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


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
