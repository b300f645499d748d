"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks") over code grids.

Embedded codes -> masked 7x7 conv (type A: excludes the centre) -> residual blocks
(1x1 down, masked 3x3 type B, 1x1 up) -> ReLU, 1x1, ReLU, 1x1 to K logits per position.
The masked convs leave the known blind spot (up-right of the current position); see
`gated-pixelcnn` for the fix. Cached sampling (Ramachandran et al. 2017): every layer keeps
a padded buffer of its conv input, and each new position is computed at that one position
per layer, since an output at (i, j) depends only on inputs at or before (i, j).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from priors.autoregressive import (AutoregressivePrior, CausalConv2d, FitConfig, pointwise,
                                   transposed)
from priors.base import check_preset, register_prior, require, require_positive


class ResidualBlock(nn.Module):
    """x + up(ReLU(maskB3x3(ReLU(down(ReLU(x)))))), as in the paper's Figure 5."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.down = nn.Linear(channels, channels // 2)  # 1x1 conv
        self.conv = CausalConv2d.raster(channels // 2, channels // 2, kernel, "B")
        self.up = nn.Linear(channels // 2, channels)  # 1x1 conv

    def forward(self, x: Tensor) -> Tensor:  # (N, C, h, w)
        t = F.relu(pointwise(self.down, F.relu(x)))  # (N, C/2, h, w): what the masked conv sees
        return x + pointwise(self.up, F.relu(self.conv(t)))


class PixelCNNNet(nn.Module):
    def __init__(self, num_codes: int, grid: tuple[int, int], cfg: "PixelCNNPrior.Config") -> None:
        super().__init__()
        self.grid = grid
        self.embed = nn.Embedding(num_codes, cfg.embed_dim)
        self.conv_in = CausalConv2d.raster(cfg.embed_dim, cfg.channels, cfg.first_kernel, "A")
        self.blocks = nn.ModuleList(ResidualBlock(cfg.channels, cfg.kernel)
                                    for _ in range(cfg.n_blocks))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(cfg.channels, cfg.head_dim), nn.ReLU(),
                                  nn.Linear(cfg.head_dim, num_codes))

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.from_embedding(self.embed(codes).movedim(-1, 1))  # (N, K, h, w)

    def from_embedding(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        # (N, E, h, w) -> (N, K, h, w); unconditional: labels are ignored
        x = self.conv_in(x)  # (N, C, h, w)
        for block in self.blocks:
            x = block(x)
        return pointwise(self.head, x)

    def stepper(self, n: int, labels: Tensor | None = None) -> "PixelCNNStepper":
        return PixelCNNStepper(self, n)


class PixelCNNStepper:
    """Per-layer caches of conv inputs; at each position, every layer once at that position.

    The inner loop is written as few tensor ops as it can be (fused addmm with the bias or the
    residual, in-place ReLUs, the 1x1 down-projection written straight into the next conv's
    buffer): at small batch sizes the sampler is bound by per-op overhead, not FLOPs.
    """

    def __init__(self, net: PixelCNNNet, n: int) -> None:
        like = net.embed.weight
        self.embed = net.embed.weight  # (K, E)
        self.conv_in = net.conv_in.cache(n, net.grid, like)
        self.convs = [b.conv.cache(n, net.grid, like) for b in net.blocks]
        self.down = [transposed(b.down) for b in net.blocks]
        self.up = [transposed(b.up) for b in net.blocks]
        self.head = [transposed(net.head[1]), transposed(net.head[3])]

    def logits_at(self, i: int, j: int) -> Tensor:
        if j == 0:
            for cache in (self.conv_in, *self.convs):
                cache.start_row(i)
        x = self.conv_in.at(j)  # (n, C), a fresh tensor: updated in place below
        for conv, (wd, bd), (wu, bu) in zip(self.convs, self.down, self.up):
            slot = conv.slots[j]  # (n, C/2), a view into the conv's buffer
            torch.addmm(bd, torch.relu(x), wd, out=slot)
            slot.relu_()
            x.addmm_(conv.at(j).relu_(), wu).add_(bu)
        (w1, b1), (w2, b2) = self.head
        return torch.addmm(b2, torch.addmm(b1, x.relu_(), w1).relu_(), w2)  # (n, K)

    def write(self, i: int, j: int, codes: Tensor) -> None:
        torch.index_select(self.embed, 0, codes, out=self.conv_in.slots[j])


@register_prior("pixelcnn")
class PixelCNNPrior(AutoregressivePrior):
    cpu_bf16_from_positions = 0  # measured: 1.77x (quick) and 2.03x (standard) the fp32 steps/s,
    # test bits/code within 0.002 of fp32 after 200 quick steps (README: Training precision)

    @dataclass(frozen=True)
    class Config(FitConfig):
        embed_dim: int = 32  # code embedding width fed to the first conv
        channels: int = 64  # residual stream width (2h in the paper); blocks run at half
        n_blocks: int = 6  # residual blocks of masked 3x3 convs after the 7x7 type-A conv
        first_kernel: int = 7  # odd; the type-A conv that excludes the current position
        kernel: int = 3  # odd; the type-B convs in the residual blocks
        head_dim: int = 128  # hidden width of the 1x1 output head

        def __post_init__(self) -> None:
            super().__post_init__()
            require_positive(self, "embed_dim", "head_dim", "n_blocks")
            require(self.channels >= 2 and self.channels % 2 == 0, "channels", self.channels,
                    "an even number >= 2")
            for name in ("first_kernel", "kernel"):
                k = getattr(self, name)
                require(k >= 1 and k % 2 == 1, name, k, "odd and >= 1")

    @classmethod
    def preset(cls, preset: str) -> "PixelCNNPrior.Config":
        check_preset(preset)
        return {
            "tiny": cls.Config(embed_dim=8, channels=16, n_blocks=2, head_dim=16, epochs=2,
                               batch_size=8),
            "quick": cls.Config(epochs=15, max_steps=1000),  # ~2 CPU-min on 2000 16x16 grids
            # 32x32 grids: a receptive field of 3 + 10 rows of 32; on ADNI 2.53 bits/code in ~10 min
            # on 2 cores, samples without the brain's outline (README, the standard table)
            "standard": cls.Config(channels=96, n_blocks=10, head_dim=256, epochs=15,
                                   max_steps=1500),
            "full": cls.Config(embed_dim=64, channels=256, n_blocks=15, head_dim=512, epochs=60,
                               batch_size=64, lr=5e-4),
        }[preset]

    def build_net(self) -> PixelCNNNet:
        return PixelCNNNet(self.num_codes, self.grid, self.config)
