"""Backbones trained side by side: same images, batch order, batch size, optimiser and
wall-clock budget; then reconstruction SSIM on the same held-out images.

The steps of the contenders are interleaved (whoever has used the least time goes next), so a
change in machine load during the race hits every contender alike.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from bench import metrics
from bench.run import sync
from vqvae import VQVAE, VQVAEConfig
from vqvae.train import to_float, train_autocast

FINAL_WINDOW = 20  # steps averaged into final_train_mse


@dataclass(frozen=True)
class Contender:
    name: str  # "ours", "monai"
    model: nn.Module
    forward: Callable[[Tensor], tuple[Tensor, Tensor]]  # x (B,1,H,W) -> (x_hat in [0,1], vq loss)
    description: dict[str, Any]  # architecture, as reported


def ours(cfg: VQVAEConfig, *, seed: int) -> Contender:
    model = VQVAE(cfg, seed=seed)
    restarts = torch.Generator().manual_seed(seed)  # dead-code restarts, as in train_vqvae
    return Contender("ours", model, lambda x: model(x, restarts)[:2],
                     {"module": "vqvae.VQVAE", **dataclasses.asdict(cfg)})


class _Runner:
    """One contender's training state: its optimiser, its batch order and its clock."""

    def __init__(self, contender: Contender, images: np.ndarray, *, batch_size: int, lr: float,
                 seed: int, device: torch.device) -> None:
        self.c, self.images, self.batch_size, self.device = contender, images, batch_size, device
        self.model = contender.model.to(device).train()
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)
        self.order = torch.Generator().manual_seed(seed)  # same seed: same batches for all
        self.queue: list[int] = []
        self.used_s, self.steps, self.mse = 0.0, 0, deque(maxlen=FINAL_WINDOW)
        self.flops_per_step = 0  # forward + backward, counted by FlopCounterMode

    def _batch(self) -> np.ndarray:
        if len(self.queue) < self.batch_size:
            self.queue = torch.randperm(len(self.images), generator=self.order).tolist()
        idx, self.queue = self.queue[:self.batch_size], self.queue[self.batch_size:]
        return self.images[np.sort(idx)]

    def step(self) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        x = to_float(self._batch(), self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with train_autocast(self.device):
            x_hat, vq_loss = self.c.forward(x)
            rec = F.mse_loss(x_hat.float(), x)
            loss = rec + vq_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.mse.append(float(rec.detach()))  # syncs, as the real training loop does
        self.used_s += time.perf_counter() - t0
        self.steps += 1

    def summary(self) -> dict[str, Any]:
        images = self.steps * self.batch_size
        return {"n_parameters": sum(p.numel() for p in self.model.parameters()),
                "steps": self.steps, "images": images, "train_s": self.used_s,
                "images_per_s": images / self.used_s, "flops_per_step": self.flops_per_step,
                "achieved_flops_per_s": self.flops_per_step * self.steps / self.used_s,
                "final_train_mse": float(np.mean(self.mse)), "architecture": self.c.description}


@torch.no_grad()
def reconstruct(contender: Contender, images: np.ndarray, device: torch.device,
                batch: int = 64) -> Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 reconstructions in [0, 1] on CPU."""
    contender.model.eval()
    out = []
    for i in range(0, len(images), batch):
        with train_autocast(device):
            x_hat, _ = contender.forward(to_float(images[i:i + batch], device))
        out.append(x_hat.float().clamp(0, 1).cpu())
    return torch.cat(out)


def race(contenders: list[Contender], *, train_images: np.ndarray, test_images: np.ndarray,
         batch_size: int, lr: float, budget_s: float, seed: int,
         device: torch.device) -> dict[str, dict[str, Any]]:
    """Train every contender for budget_s seconds of its own steps (one untimed warm-up step
    first), then score reconstructions of test_images. AdamW at a constant lr for all."""
    runners = [_Runner(c, train_images, batch_size=batch_size, lr=lr, seed=seed, device=device)
               for c in contenders]
    for r in runners:  # warm-up (allocator, thread pool, kernels); its FLOPs are counted
        with FlopCounterMode(display=False) as counter:
            r.step()
        r.flops_per_step = int(counter.get_total_flops())
        r.used_s, r.steps = 0.0, 0
    while min(r.used_s for r in runners) < budget_s:
        min(runners, key=lambda r: r.used_s).step()
    x = to_float(test_images, torch.device("cpu"))
    results = {}
    for r in runners:
        recon = reconstruct(r.c, test_images, device)
        results[r.c.name] = r.summary() | {"recon_ssim": float(metrics.ssim(recon, x).mean()),
                                           "recon_psnr": float(metrics.psnr(recon, x).mean())}
    return results
