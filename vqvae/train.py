"""Backbone training and batched encode/decode over uint8 image arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainkit import (PRECISIONS, Checkpoint, EpochOrder, NullCheckpoint, Progress,
                      Stopwatch, all_reduce_sum_, cpu_copy, data_parallel, from_rank0, rank_world,
                      resolve_precision, train_autocast)
from vqvae.model import VQVAE


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # passes over the training split
    batch_size: int = 32  # images per step
    lr: float = 2e-3  # AdamW peak learning rate (one-cycle: warm-up over the first 5% of steps)
    final_lr_frac: float = 0.002  # the last step's lr = lr * final_lr_frac (cosine decay to it)
    weight_decay: float = 0.0  # AdamW weight decay
    seed: int = 0  # weight init, batch order and dead-code restarts
    precision: str = "auto"  # fp32 | bf16 (autocast; the quantizer stays fp32) | auto: bf16 on
    # CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32 (`resolve_precision`)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.final_lr_frac <= 1:
            raise ValueError(f"final_lr_frac must be in (0, 1], got {self.final_lr_frac}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")


def to_float(images: np.ndarray, device: torch.device) -> Tensor:
    """(B, H, W) uint8 -> (B, 1, H, W) float32 in [0, 1] on device."""
    arr = np.ascontiguousarray(images, dtype=np.uint8)
    if not arr.flags.writeable:  # read-only memmaps: torch wants writable memory
        arr = arr.copy()
    x = torch.from_numpy(arr).to(device, non_blocking=True)
    return x.unsqueeze(1).float().div_(255.0)


def inference_autocast(device: torch.device):
    """Encoding and decoding: bf16 autocast on CUDA, fp32 elsewhere (code assignment itself
    is always fp32: `Quantizer.indices`)."""
    return train_autocast(device, "bf16" if device.type == "cuda" else "fp32")


def train_vqvae(model: VQVAE, images: np.ndarray, cfg: TrainConfig, *, device: torch.device,
                progress: Progress, checkpoint: Checkpoint = NullCheckpoint()) -> dict[str, Any]:
    """Train `model` from scratch, in place, on (N, H, W) uint8 images: weights redrawn from
    cfg.seed, which also seeds the batch order and the dead-code restarts (torch's global RNG
    is not used). Returns summary numbers and the precision it trained at ('fp32' or 'bf16').

    Continues from the checkpoint's last state if it holds one (bitwise the same weights as an
    uninterrupted run, on CPU). Under torch.distributed each rank trains on its equal slice of
    every global batch of `cfg.batch_size` images, in DistributedDataParallel."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    model.reset_parameters(cfg.seed)  # init from cfg.seed; a resumed state replaces it below
    rank, world = rank_world()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size must be a multiple of the {world} ranks, "
                         f"got {cfg.batch_size}")
    precision = resolve_precision(cfg.precision, device)
    model.to(device).train()
    model.to(memory_format=torch.channels_last)  # faster convs on CUDA and CPU (oneDNN) alike
    steps_per_epoch = max(1, images.shape[0] // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt, sched = _optimiser(model, cfg, total)
    order = EpochOrder(images.shape[0], cfg.batch_size, steps_per_epoch,
                       torch.Generator().manual_seed(cfg.seed))
    parts = {"model": model, "opt": opt, "sched": sched, "order": order}
    generators = {"restarts": torch.Generator().manual_seed(cfg.seed + 1)}  # dead-code picks
    if rank:  # rank 0 alone reads and writes the checkpoint; the others get its state
        checkpoint = NullCheckpoint()
    run = resume(from_rank0(checkpoint.load()), parts, generators,
                 TrainState(values={"seen": 0, "mse": float("nan"), "wall_s": 0.0, "cpu_s": 0.0,
                                    "core_s": 0.0, "updates": 0}))
    model.quantizer.updates = run.values["updates"]
    net, clock = data_parallel(model), Stopwatch(run.values["wall_s"], run.values.get("cpu_s"),
                                                 run.values.get("core_s"))
    start_progress(progress, "backbone", total, run)
    try:
        for step in range(run.step, total):
            idx = np.sort(order.batch(step).numpy()).reshape(world, -1)[rank]  # this rank's slice
            x = to_float(images[idx], device)
            mse, lr = _train_step(net, opt, sched, x, generators["restarts"], precision)
            run.step = step + 1
            run.values.update(seen=run.values["seen"] + cfg.batch_size, mse=mse,
                              **clock.elapsed(), updates=model.quantizer.updates, lr=lr)
            advance(progress, run, mse=mse)
            save_if_due(checkpoint, run, parts, generators)
    finally:
        progress.stop()
    model.eval()
    times = clock.summary(device, world)
    return {**times, "train_images_per_s": run.values["seen"] / times["train_wall_s"],
            "final_mse": run.values["mse"], "steps": float(total),
            "final_lr": run.values.get("lr", cfg.lr), "precision": precision}


def _optimiser(model: VQVAE, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, one_cycle(opt, cfg, total_steps)


def one_cycle(opt: torch.optim.Optimizer, cfg: TrainConfig,
              total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """lr: warm-up from lr/25 over the first 5% of steps (at least 2 steps), cosine decay to lr * final_lr_frac at
    the last step (OneCycleLR ends at its initial lr / final_div_factor). AdamW's beta1 moves
    the other way, 0.95 -> 0.85 -> 0.95 (OneCycleLR's momentum cycle)."""
    div = 25.0
    # warm-up of >= 2 steps: OneCycleLR divides by (warm-up steps - 1), zero at 20 steps and 5%
    warmup = 0.05 if total_steps < 3 else max(0.05, 2.0 / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps,
                                               pct_start=warmup, div_factor=div,
                                               final_div_factor=1 / (div * cfg.final_lr_frac))


def _train_step(net: nn.Module, opt: torch.optim.Optimizer, sched: Any, x: Tensor,
                restarts: torch.Generator, precision: str) -> tuple[float, float]:
    """One AdamW step on a batch (B, 1, H, W) at a resolved `precision`; returns the global
    batch's reconstruction MSE and the lr the step used."""
    x = x.contiguous(memory_format=torch.channels_last)
    with train_autocast(x.device, precision):
        x_hat, vq_loss, _ = net(x, restarts)
        rec = F.mse_loss(x_hat.float(), x)
        loss = rec + vq_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    lr = sched.get_last_lr()[0]
    sched.step()
    world = rank_world()[1]
    if world == 1:
        return float(rec.detach()), lr
    return float(all_reduce_sum_(rec.detach().clone())) / world, lr  # equal slices: mean of means


# -- resumable loops (the backbone's here, the mri extractor's in bench) ------------------------


@dataclass
class TrainState:
    """A training loop's position besides its nets, optimisers and generators."""

    step: int = 0  # optimisation steps done
    history: list[dict[str, float]] = field(default_factory=list)  # progress metrics per step
    values: dict[str, Any] = field(default_factory=dict)  # running values: last loss, wall s, ...


def resume(state: dict[str, Any] | None, parts: dict[str, Any],
           generators: dict[str, torch.Generator], fresh: TrainState) -> TrainState:
    """A checkpoint's state (from `Checkpoint.load`) loaded into `parts` (objects with
    state_dict / load_state_dict) and `generators`; `fresh` if there is none."""
    if state is None:
        return fresh
    for name, part in parts.items():
        part.load_state_dict(state["parts"][name])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    return TrainState(state["step"], state["history"], state["values"])


def save_if_due(checkpoint: Checkpoint, run: TrainState, parts: dict[str, Any],
                generators: dict[str, torch.Generator]) -> None:
    """Save everything `resume` needs when the checkpoint says it is due."""
    if checkpoint.due(run.step):
        checkpoint.save(cpu_copy({
            "step": run.step, "history": run.history, "values": run.values,
            "parts": {name: part.state_dict() for name, part in parts.items()},
            "generators": {name: g.get_state() for name, g in generators.items()}}))


def start_progress(progress: Progress, description: str, total: int, run: TrainState) -> None:
    """Start the bar at the steps done, their metrics replayed ("resumed at step k")."""
    if run.step:
        description += f" (resumed at step {run.step})"
    progress.start(description, total)
    for metrics in run.history:
        progress.advance(1, **metrics)


def advance(progress: Progress, run: TrainState, **metrics: float) -> None:
    run.history.append({k: float(v) for k, v in metrics.items()})
    progress.advance(1, **metrics)


@torch.no_grad()
def encode_array(model: VQVAE, images: np.ndarray, *, device: torch.device,
                 batch_size: int = 256) -> Tensor:
    """(N, H, W) uint8 -> (N, h, w) int64 codes on CPU."""
    model.to(device).eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        with inference_autocast(device):
            z_e = model.encoder(to_float(images[i:i + batch_size], device))
        out.append(model.quantizer.indices(z_e).cpu())  # indices assign in fp32
    h, w = model.grid(images.shape[1])
    return torch.cat(out) if out else torch.empty(0, h, w, dtype=torch.int64)


@torch.no_grad()
def decode_codes(model: VQVAE, codes: Tensor, *, device: torch.device,
                 batch_size: int = 256) -> Tensor:
    """(N, h, w) int64 -> (N, 1, H, W) float32 in [0, 1] on CPU."""
    model.to(device).eval()
    out = [model.decode_indices(codes[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, codes.shape[0], batch_size)]
    return torch.cat(out)
