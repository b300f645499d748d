"""Backbone training and batched encode/decode over uint8 image arrays."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.model import VQVAE


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1, **metrics: float) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # passes over the training split
    batch_size: int = 32  # images per step
    lr: float = 2e-3  # AdamW peak learning rate (one-cycle: warm-up over the first 5% of steps)
    final_lr_frac: float = 0.002  # the last step's lr = lr * final_lr_frac (cosine decay to it)
    weight_decay: float = 0.0  # AdamW weight decay
    seed: int = 0  # weight init, batch order and dead-code restarts

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.final_lr_frac <= 1:
            raise ValueError(f"final_lr_frac must be in (0, 1], got {self.final_lr_frac}")


def to_float(images: np.ndarray, device: torch.device) -> Tensor:
    """(B, H, W) uint8 -> (B, 1, H, W) float32 in [0, 1] on device."""
    arr = np.ascontiguousarray(images, dtype=np.uint8)
    if not arr.flags.writeable:  # read-only memmaps: torch wants writable memory
        arr = arr.copy()
    x = torch.from_numpy(arr).to(device, non_blocking=True)
    return x.unsqueeze(1).float().div_(255.0)


def train_autocast(device: torch.device):
    """The backbone's training precision: bf16 autocast on CUDA, fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_vqvae(model: VQVAE, images: np.ndarray, cfg: TrainConfig, *, device: torch.device,
                progress: Progress) -> dict[str, float]:
    """Train `model` from scratch, in place, on (N, H, W) uint8 images: its weights are redrawn
    from cfg.seed, which also draws the batch order and the dead-code restarts (torch's global
    RNG is not used). Returns summary numbers."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W) uint8, got {images.shape} {images.dtype}")
    model.reset_parameters(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order, then restarts as they come
    model.to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = images.shape[0]
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = one_cycle(opt, cfg, total)
    progress.start("backbone", total)
    t0, seen, recon, last_lr = time.perf_counter(), 0, float("nan"), cfg.lr
    try:
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen).numpy()
            for s in range(steps_per_epoch):
                idx = np.sort(order[s * cfg.batch_size:(s + 1) * cfg.batch_size])
                x = to_float(images[idx], device)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with train_autocast(device):
                    x_hat, vq_loss, _ = model(x, gen)
                    rec = F.mse_loss(x_hat.float(), x)
                    loss = rec + vq_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last_lr = sched.get_last_lr()[0]  # the lr this step used
                sched.step()
                seen += len(idx)
                recon = float(rec.detach())
                progress.advance(1, mse=recon)
    finally:
        progress.stop()
    wall_s = time.perf_counter() - t0
    model.eval()
    return {"train_wall_s": wall_s, "train_images_per_s": seen / wall_s, "final_mse": recon,
            "steps": float(total), "final_lr": last_lr}


def one_cycle(opt: torch.optim.Optimizer, cfg: TrainConfig,
              total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """lr: warm-up from lr/25 over the first 5% of steps, cosine decay to lr * final_lr_frac at
    the last step (OneCycleLR ends at its initial lr / final_div_factor). AdamW's beta1 moves
    the other way, 0.95 -> 0.85 -> 0.95 (OneCycleLR's momentum cycle)."""
    div = 25.0
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps,
                                               pct_start=0.05, div_factor=div,
                                               final_div_factor=1 / (div * cfg.final_lr_frac))


@torch.no_grad()
def encode_array(model: VQVAE, images: np.ndarray, *, device: torch.device,
                 batch_size: int = 256) -> Tensor:
    """(N, H, W) uint8 -> (N, h, w) int64 codes on CPU."""
    model.to(device).eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        with train_autocast(device):
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
