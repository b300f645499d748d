"""VQ-VAE (van den Oord et al. 2017) for single-channel slices.

Encoder: strided 4x4 convs (one per factor of 2), a 3x3 conv, residual blocks, 1x1 to D.
Quantizer: nearest codebook vector, codebook + commitment losses (beta), or EMA updates.
Decoder: mirror image with transposed convs; a sigmoid keeps images in [0, 1].
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainkit import all_reduce_sum_, gather_rows

RESTART_EVERY = 10  # EMA updates between dead-code checks (each check syncs with the host)
DEAD_BELOW = 1.0  # EMA assignments per update under which a code counts as dead


@dataclass(frozen=True)
class VQVAEConfig:
    in_channels: int = 1  # grey slices
    hidden: int = 64  # channels of the conv trunk
    res_blocks: int = 2  # residual blocks in encoder and decoder each
    res_hidden: int = 32  # bottleneck channels inside a residual block
    downsample: int = 4  # image side / code grid side: 4 or 8
    num_codes: int = 64  # K, codebook size
    code_dim: int = 32  # D, codebook vector size
    beta: float = 0.25  # commitment loss weight (van den Oord et al. 2017)
    ema: bool = True  # EMA codebook updates instead of a codebook loss
    ema_decay: float = 0.99  # EMA decay of cluster sizes and sums
    restart_dead: bool = True  # re-seed rarely used codes from encoder outputs (EMA or learnt)

    def __post_init__(self) -> None:
        if self.downsample not in (4, 8):
            raise ValueError(f"downsample must be 4 or 8, got {self.downsample}")
        if self.num_codes < 2:
            raise ValueError(f"num_codes must be >= 2, got {self.num_codes}")
        for name in ("hidden", "res_hidden", "code_dim", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.res_blocks < 0:
            raise ValueError(f"res_blocks must be >= 0, got {self.res_blocks}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


class ResBlock(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(), nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        n_down = int(math.log2(cfg.downsample))
        layers: list[nn.Module] = []
        ch_in = cfg.in_channels
        for i in range(n_down):
            ch_out = cfg.hidden // 2 if i < n_down - 1 else cfg.hidden
            layers += [nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1), nn.ReLU()]
            ch_in = ch_out
        layers.append(nn.Conv2d(ch_in, cfg.hidden, 3, padding=1))
        layers += [ResBlock(cfg.hidden, cfg.res_hidden) for _ in range(cfg.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(cfg.hidden, cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, D, h, w)


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        n_up = int(math.log2(cfg.downsample))
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.hidden, 3, padding=1)]
        layers += [ResBlock(cfg.hidden, cfg.res_hidden) for _ in range(cfg.res_blocks)]
        layers.append(nn.ReLU())
        ch_in = cfg.hidden
        for i in range(n_up):
            last = i == n_up - 1
            ch_out = cfg.in_channels if last else cfg.hidden // 2
            layers.append(nn.ConvTranspose2d(ch_in, ch_out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            ch_in = ch_out
        self.net = nn.Sequential(*layers)

    def forward(self, z_q: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z_q))  # (B, 1, H, W) in [0, 1]


class Quantizer(nn.Module):
    """Nearest-neighbour vector quantizer with a straight-through gradient.

    With `ema`, the codebook follows exponential moving averages of the encoder outputs
    assigned to each code (van den Oord et al. 2017, appendix); otherwise it learns from the
    codebook loss. Either way, with `restart_dead`, codes whose EMA usage falls below
    DEAD_BELOW are re-seeded from random encoder outputs of the batch, drawn from the
    `generator` given to `forward` (torch's global RNG when it is None).
    Under torch.distributed (each rank quantizing its slice of one global batch) the usage
    statistics are summed over ranks and restarts pick from the gathered encoder outputs with
    the same generator on every rank: the codebook stays the same on every rank.
    """

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.K, self.D = cfg.num_codes, cfg.code_dim
        self.beta, self.ema, self.decay = cfg.beta, cfg.ema, cfg.ema_decay
        self.restart_dead = cfg.restart_dead
        self.codebook = nn.Parameter(torch.empty(self.K, self.D), requires_grad=not cfg.ema)
        self.register_buffer("ema_size", torch.zeros(self.K))  # EMA assignments per code
        self.register_buffer("ema_sum", torch.zeros(self.K, self.D))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Codebook uniform in +-1/K (from torch's global RNG, like every torch layer)."""
        self.codebook.data.uniform_(-1 / self.K, 1 / self.K)
        self.ema_size.zero_()
        self.ema_sum.copy_(self.codebook.detach())
        self.updates = 0  # training updates so far (not saved: only paces dead-code restarts)

    def indices(self, z_e: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, h, w) int64 nearest-code indices (computed in fp32)."""
        if z_e.dtype != torch.float32:
            z_e = z_e.float()
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.D)  # (B*h*w, D)
        e = self.codebook
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)  # (B*h*w, K)
        return dist.argmin(1).view(z_e.shape[0], z_e.shape[2], z_e.shape[3])

    def embed(self, codes: Tensor) -> Tensor:
        """(B, h, w) int64 -> (B, D, h, w) codebook vectors."""
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Returns z_q with straight-through gradient, the VQ loss and the indices. In training
        mode it also updates the usage statistics (and the EMA codebook), restarting dead codes.

        Always fp32, also under bf16 autocast: code assignment must not depend on the
        training precision, or training and export would pick different codes."""
        with torch.autocast(z_e.device.type, enabled=False):
            return self._forward(z_e.float(), generator)

    def _forward(self, z_e: Tensor,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        codes = self.indices(z_e)
        z_q = self.embed(codes)
        loss = self.beta * F.mse_loss(z_e, z_q.detach())  # commitment
        if not self.ema:
            loss = loss + F.mse_loss(z_q, z_e.detach())  # codebook loss
        if self.training:
            self._update(z_e.detach(), codes, generator)
        z_q = z_e + (z_q - z_e).detach()
        return z_q, loss, codes

    @torch.no_grad()
    def _update(self, z_e: Tensor, codes: Tensor, generator: torch.Generator | None) -> None:
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.D)  # (M, D)
        onehot = F.one_hot(codes.reshape(-1), self.K).type_as(flat)  # (M, K)
        counts = all_reduce_sum_(onehot.sum(0))  # (K,) over the global batch
        self.ema_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            self.ema_sum.mul_(self.decay).add_(all_reduce_sum_(onehot.t() @ flat),
                                               alpha=1 - self.decay)
            n = self.ema_size.sum()
            size = (self.ema_size + 1e-5) / (n + self.K * 1e-5) * n  # Laplace smoothing
            self.codebook.data.copy_(self.ema_sum / size.unsqueeze(1))
        self.updates += 1
        if self.restart_dead and self.updates % RESTART_EVERY == 1:
            self._restart_dead(gather_rows(flat), generator)  # every rank's rows, same picks

    def _restart_dead(self, flat: Tensor, generator: torch.Generator | None) -> None:
        """Dead: fewer than DEAD_BELOW assignments per update on EMA average. Re-seeded from
        random rows of `flat` (M, D), this batch's encoder outputs (at the first update this is
        a data init). Indices are drawn on the CPU: the same picks on every device."""
        dead = self.ema_size < DEAD_BELOW
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, flat.shape[0], (n_dead,), generator=generator).to(flat.device)
            self.codebook.data[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick] * DEAD_BELOW
            self.ema_size[dead] = DEAD_BELOW


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's global CPU RNG seeded inside, restored on exit (weights are drawn on the CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class VQVAE(nn.Module):
    """The backbone. Its weights are drawn from `seed` (torch's global RNG is left as it was),
    so a fresh instance is the same net every time; `reset_parameters(seed)` redraws them."""

    def __init__(self, cfg: VQVAEConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        with _seeded(seed):
            self.encoder = Encoder(cfg)
            self.quantizer = Quantizer(cfg)
            self.decoder = Decoder(cfg)

    def reset_parameters(self, seed: int) -> None:
        """Redraw every weight from `seed`: the same weights as `VQVAE(cfg, seed=seed)`."""
        with _seeded(seed):
            for module in self.modules():  # construction order: the same draws as __init__
                if module is not self and hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def forward(self, x: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 1, H, W) in [0, 1] -> reconstruction, VQ loss, codes (B, h, w). `generator`
        draws the quantizer's dead-code restarts in training mode (None: torch's global RNG)."""
        z_q, vq_loss, codes = self.quantizer(self.encoder(x), generator)
        return self.decoder(z_q), vq_loss, codes

    def grid(self, image_size: int) -> tuple[int, int]:
        side = image_size // self.cfg.downsample
        return (side, side)

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) float in [0, 1] -> (B, h, w) int64 in [0, K)."""
        return self.quantizer.indices(self.encoder(x))

    @torch.no_grad()
    def decode_indices(self, codes: Tensor) -> Tensor:
        """(B, h, w) int64 -> (B, 1, H, W) float in [0, 1]."""
        if codes.dtype != torch.int64:
            codes = codes.long()
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.num_codes):
            raise ValueError(f"codes must be in [0, {self.cfg.num_codes}), "
                             f"got range [{int(codes.min())}, {int(codes.max())}]")
        return self.decoder(self.quantizer.embed(codes))

    @property
    def codebook(self) -> Tensor:
        return self.quantizer.codebook.detach()  # (K, D)
