"""Backbones trained side by side: same images, batch order, batch size, precision and
wall-clock budget, each with its own training recipe; then reconstruction SSIM, codes used and
a degeneracy check on the same held-out images.

The steps of the contenders are interleaved (whoever has used the least time goes next), so a
change in machine load during the race hits every contender alike. A contender whose
reconstructions are degenerate (flat, the same for every image, or from <= 2 codes) is flagged
and left out of the ranking: a fast backbone that learnt nothing has not won anything.
"""

from __future__ import annotations

import dataclasses
import math
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
from vqvae import VQVAE, TrainConfig, VQVAEConfig
from vqvae.train import to_float, train_autocast

FINAL_WINDOW = 20  # steps averaged into final_train_mse


BETA1 = (0.95, 0.85)  # AdamW beta1 at the ends and at the peak of the lr (OneCycleLR's defaults)


@dataclass(frozen=True)
class Recipe:
    """AdamW on `vqvae.train.one_cycle`'s schedule, by the share of the budget used instead of
    steps: lr cosine-annealed from lr / 25 up to lr over the first `warmup_frac`, then down to
    lr * final_lr_frac at the end; beta1 the other way, 0.95 -> 0.85 -> 0.95. The beta1 cycle
    matters: without it (beta1 0.9) our backbone reconstructed every ADNI image as the same flat
    image after 250 quick steps, with it recon SSIM was 0.77 (README, peer race)."""

    lr: float  # peak AdamW learning rate
    final_lr_frac: float = 0.01  # lr at the end of the budget / lr
    warmup_frac: float = 0.05  # share of the budget spent warming up
    weight_decay: float = 0.0  # AdamW decoupled weight decay

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.final_lr_frac <= 1:
            raise ValueError(f"final_lr_frac must be in (0, 1], got {self.final_lr_frac}")
        if not 0 < self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in (0, 1), got {self.warmup_frac}")

    def at(self, frac: float) -> tuple[float, float]:
        """(lr, beta1) after `frac` of the budget (clipped to [0, 1])."""
        frac = min(1.0, max(0.0, frac))
        if frac < self.warmup_frac:
            t = frac / self.warmup_frac
            return _anneal(self.lr / 25, self.lr, t), _anneal(BETA1[0], BETA1[1], t)
        t = (frac - self.warmup_frac) / (1 - self.warmup_frac)
        return _anneal(self.lr, self.lr * self.final_lr_frac, t), _anneal(BETA1[1], BETA1[0], t)


def _anneal(start: float, end: float, t: float) -> float:
    """Cosine from start (t = 0) to end (t = 1), as OneCycleLR anneals."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Contender:
    name: str  # "ours", "monai"
    model: nn.Module
    forward: Callable[[Tensor], tuple[Tensor, Tensor]]  # x (B,1,H,W) -> (x_hat in [0,1], vq loss)
    codes: Callable[[Tensor], Tensor]  # x (B,1,H,W) -> (B, h, w) int64 code indices
    recipe: Recipe
    num_codes: int  # K
    description: dict[str, Any]  # architecture and codebook care, as reported
    prepare: Callable[[Tensor], None] | None = None  # data-dependent init on one training batch


def ours(cfg: VQVAEConfig, train: TrainConfig, *, seed: int) -> Contender:
    """Our backbone as `train_vqvae` trains it: its one-cycle lr shape, EMA codebook and
    dead-code restarts (drawn from their own generator)."""
    model = VQVAE(cfg, seed=seed)
    restarts = torch.Generator().manual_seed(seed)
    return Contender("ours", model, lambda x: model(x, restarts)[:2], model.encode_indices,
                     Recipe(lr=train.lr, final_lr_frac=train.final_lr_frac,
                            weight_decay=train.weight_decay), cfg.num_codes,
                     {"module": "vqvae.VQVAE", **dataclasses.asdict(cfg),
                      "codebook_care": "EMA, dead codes re-seeded from encoder outputs"})


class _Runner:
    """One contender's training state: its optimiser, its batch order and its clock."""

    def __init__(self, contender: Contender, images: np.ndarray, *, batch_size: int,
                 budget_s: float, seed: int, device: torch.device, precision: str) -> None:
        self.c, self.images, self.batch_size, self.device = contender, images, batch_size, device
        self.budget_s, self.precision = budget_s, precision
        self.model = contender.model.to(device).train().to(memory_format=torch.channels_last)
        lr, beta1 = contender.recipe.at(0.0)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=lr, betas=(beta1, 0.999),
                                     weight_decay=contender.recipe.weight_decay)
        self.order = torch.Generator().manual_seed(seed)  # same seed: same batches for all
        self.queue: list[int] = []
        self.used_s, self.steps, self.mse = 0.0, 0, deque(maxlen=FINAL_WINDOW)
        self.flops_per_step = 0  # forward + backward, counted by FlopCounterMode

    def prepare(self, seed: int) -> None:
        """The contender's data-dependent init (if any) on a batch drawn apart from the
        training order, before the untimed warm-up step."""
        if self.c.prepare is not None:
            pick = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
            batch = self.images[np.sort(pick[:self.batch_size].numpy())]
            self.c.prepare(to_float(batch, self.device).contiguous(
                memory_format=torch.channels_last))

    def _batch(self) -> np.ndarray:
        if len(self.queue) < self.batch_size:
            self.queue = torch.randperm(len(self.images), generator=self.order).tolist()
        idx, self.queue = self.queue[:self.batch_size], self.queue[self.batch_size:]
        return self.images[np.sort(idx)]

    def step(self) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        lr, beta1 = self.c.recipe.at(self.used_s / self.budget_s)
        for group in self.opt.param_groups:
            group["lr"], group["betas"] = lr, (beta1, group["betas"][1])
        x = to_float(self._batch(), self.device).contiguous(memory_format=torch.channels_last)
        with train_autocast(self.device, self.precision):
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
                "final_train_mse": float(np.mean(self.mse)),
                "recipe": dataclasses.asdict(self.c.recipe), "architecture": self.c.description}


@torch.no_grad()
def reconstruct(contender: Contender, images: np.ndarray, device: torch.device,
                batch: int = 64) -> tuple[Tensor, Tensor]:
    """(N, H, W) uint8 -> reconstructions (N, 1, H, W) float32 in [0, 1] and codes (N, h, w),
    both on CPU, in fp32."""
    contender.model.eval()
    recon, codes = [], []
    for i in range(0, len(images), batch):
        x = to_float(images[i:i + batch], device)
        recon.append(contender.forward(x)[0].float().clamp(0, 1).cpu())
        codes.append(contender.codes(x).cpu())
    return torch.cat(recon), torch.cat(codes)


def score(contender: Contender, test_images: np.ndarray, device: torch.device) -> dict[str, Any]:
    """Recon SSIM / PSNR, codes used and the degeneracy verdict on the test images."""
    recon, codes = reconstruct(contender, test_images, device)
    x = to_float(test_images, torch.device("cpu"))
    counts = metrics.code_histogram(codes, contender.num_codes)
    spread = metrics.spread_ratios(recon, x)
    used = metrics.distinct_codes(counts)
    return {"recon_ssim": float(metrics.ssim(recon, x).mean()),
            "recon_psnr": float(metrics.psnr(recon, x).mean()),
            "codes_used": used, "num_codes": contender.num_codes,
            "code_perplexity": metrics.perplexity(counts), "spread": spread,
            "degenerate": metrics.degenerate_reconstruction(spread, used) or None}


def race(contenders: list[Contender], *, train_images: np.ndarray, test_images: np.ndarray,
         batch_size: int, budget_s: float, seed: int, device: torch.device,
         precision: str) -> dict[str, dict[str, Any]]:
    """Train every contender for budget_s seconds of its own steps (its `prepare` and one
    warm-up step first, untimed) at a resolved `precision` ('fp32' or 'bf16' autocast), each by
    its recipe, then score it on test_images."""
    runners = [_Runner(c, train_images, batch_size=batch_size, budget_s=budget_s, seed=seed,
                       device=device, precision=precision) for c in contenders]
    for r in runners:  # warm-up (allocator, thread pool, kernels); its FLOPs are counted
        r.prepare(seed + 1)
        with FlopCounterMode(display=False) as counter:
            r.step()
        r.flops_per_step = int(counter.get_total_flops())
        r.used_s, r.steps = 0.0, 0
    while min(r.used_s for r in runners) < budget_s:
        min(runners, key=lambda r: r.used_s).step()
    return {r.c.name: r.summary() | score(r.c, test_images, device) for r in runners}
