"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") over code grids.

Two stacks remove PixelCNN's blind spot: the vertical stack sees whole rows above (a
(k//2+1) x k kernel covering rows i-k//2..i, shifted down one row before it feeds the
horizontal stack), the horizontal stack sees the current row left of the position (1 x
(k//2+1) kernel; the first layer excludes the position itself). Units are gated,
tanh(a) * sigmoid(b); the horizontal stack has residual and skip connections; an optional
learned class embedding is added to every gate (`conditional`).

Cached sampling (Ramachandran et al. 2017): when a row is complete, the vertical stack is
computed for that row only (one row-conv per layer); at each position, the horizontal stack is
computed at that position only. Every layer keeps padded buffers of its conv inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from priors.autoregressive import (AutoregressivePrior, CausalConv2d, FitConfig, pointwise,
                                   transposed)
from priors.base import check_preset, register_prior, require, require_positive


def gate(x: Tensor, dim: int) -> Tensor:  # (.., 2C, ..) -> (.., C, ..)
    a, b = x.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: Tensor) -> Tensor:  # (N, C, h, w): row i gets row i-1, row 0 gets zeros
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class GatedLayer(nn.Module):
    def __init__(self, c_in: int, channels: int, skip_dim: int, kernel: int, first: bool,
                 num_classes: int, vertical_residual: bool) -> None:
        super().__init__()
        k, c2 = kernel, 2 * channels
        self.first = first
        self.v_residual = vertical_residual and not first
        self.v_conv = CausalConv2d(c_in, c2, (k // 2 + 1, k), (k // 2, k // 2, k // 2, 0),
                                   torch.ones(k // 2 + 1, k))
        h_mask = torch.ones(1, k // 2 + 1)
        h_mask[0, -1] = 0 if first else 1  # the first layer must not see the current code
        self.h_conv = CausalConv2d(c_in, c2, (1, k // 2 + 1), (k // 2, 0, 0, 0), h_mask)
        self.v_to_h = nn.Linear(c2, c2)  # 1x1: vertical pre-activations into the horizontal
        self.res_skip = nn.Linear(channels, channels + skip_dim)  # 1x1: residual | skip
        self.widths = [channels, skip_dim]
        self.cond = nn.Embedding(num_classes, 2 * c2) if num_classes else None  # v and h gates

    def class_bias(self, labels: Tensor | None) -> tuple[Tensor | float, Tensor | float]:
        if self.cond is None or labels is None:
            return 0.0, 0.0
        return self.cond(labels).chunk(2, dim=-1)  # 2 x (N, 2C)

    def horizontal(self, h_pre: Tensor, h_in: Tensor) -> tuple[Tensor, Tensor]:
        """Gate, skip, residual of the horizontal stack: (N, 2C, h, w) -> (N, C, ..), (N, S, ..)."""
        out, skip = pointwise(self.res_skip, gate(h_pre, 1)).split(self.widths, dim=1)
        return (out if self.first else h_in + out), skip

    def forward(self, v: Tensor, h: Tensor, labels: Tensor | None):  # (N, C_in, h, w) each
        cv, ch = self.class_bias(labels)
        v_pre = self.v_conv(v) + (cv[:, :, None, None] if torch.is_tensor(cv) else cv)
        h_pre = (self.h_conv(h) + pointwise(self.v_to_h, shift_down(v_pre))
                 + (ch[:, :, None, None] if torch.is_tensor(ch) else ch))  # (N, 2C, h, w)
        h_out, skip = self.horizontal(h_pre, h)
        v_out = gate(v_pre, 1) + (v if self.v_residual else 0.0)
        return v_out, h_out, skip  # (N, C, h, w), (N, C, h, w), (N, S, h, w)


class GatedPixelCNNNet(nn.Module):
    def __init__(self, num_codes: int, grid: tuple[int, int], num_classes: int,
                 cfg: "GatedPixelCNNPrior.Config") -> None:
        super().__init__()
        self.grid = grid
        self.embed = nn.Embedding(num_codes, cfg.embed_dim)
        self.layers = nn.ModuleList(
            GatedLayer(cfg.embed_dim if n == 0 else cfg.channels, cfg.channels, cfg.skip_dim,
                       cfg.first_kernel if n == 0 else cfg.kernel, n == 0, num_classes,
                       cfg.vertical_residual)
            for n in range(cfg.n_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(cfg.skip_dim, cfg.head_dim), nn.ReLU(),
                                  nn.Linear(cfg.head_dim, num_codes))

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.from_embedding(self.embed(codes).movedim(-1, 1), labels)  # (N, K, h, w)

    def from_embedding(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        v, h, skips = x, x, 0.0  # x (N, E, h, w)
        for layer in self.layers:
            v, h, skip = layer(v, h, labels)
            skips = skips + skip
        return pointwise(self.head, skips)  # (N, K, h, w)

    def stepper(self, n: int, labels: Tensor | None = None) -> "GatedStepper":
        return GatedStepper(self, n, labels)


class GatedStepper:
    """Vertical stack one finished row at a time, horizontal stack one position at a time.

    Per row, the vertical stack's link into the horizontal stack (and the class bias) is folded
    into the horizontal convs' per-row term. Per position, each layer is one addmm for its
    conv, an in-place gate written into a (n, layers*C) buffer and one addmm for its residual,
    written straight into the next layer's buffer; the skip connections of all layers are one
    matmul on that buffer at the end, since a sum of linear maps is one linear map.
    """

    def __init__(self, net: GatedPixelCNNNet, n: int, labels: Tensor | None) -> None:
        self.net, like = net, net.embed.weight
        self.v = [l.v_conv.cache(n, net.grid, like) for l in net.layers]
        self.h = [l.h_conv.cache(n, net.grid, like) for l in net.layers]
        self.bias = [l.class_bias(labels) for l in net.layers]
        c = net.layers[0].widths[0]
        self.gates = like.new_zeros(n, len(net.layers) * c)  # every layer's gate output
        self.gate_views = list(self.gates.split(c, dim=1))  # (n, C) views, one per layer
        self.res = [(l.res_skip.weight[:c].t(), l.res_skip.bias[:c]) for l in net.layers]
        self.skip_w = torch.cat([l.res_skip.weight[c:] for l in net.layers], dim=1).t()
        self.skip_b = sum(l.res_skip.bias[c:] for l in net.layers)  # (S,)
        self.head = [transposed(net.head[k]) for k in (1, 3)]

    def _start_row(self, i: int) -> None:
        """Vertical stack at row i-1 (row -1 is zero padding) -> each layer's row term."""
        if i > 0:  # the first layer's inputs are the codes: one row copy, not one per position
            self.v[0].row_input(i - 1).copy_(self.h[0].row_input(i - 1))
        for k, layer in enumerate(self.net.layers):
            cv, ch = self.bias[k]  # (n, 2C) class biases, or 0.0
            if i == 0:
                link = layer.v_to_h.bias  # the 1x1 link of the zero row
            else:
                v_pre = self.v[k].full_row(i - 1) + cv  # (w, n, 2C)
                link = layer.v_to_h(v_pre)
                if k + 1 < len(self.net.layers):
                    v_out = gate(v_pre, -1)  # (w, n, C)
                    if layer.v_residual:
                        v_out = v_out + self.v[k].row_input(i - 1).transpose(0, 1)
                    self.v[k + 1].row_input(i - 1).copy_(v_out.transpose(0, 1))
            self.h[k].start_row(i, link + ch)

    def logits_at(self, i: int, j: int) -> Tensor:
        if j == 0:
            self._start_row(i)
        last = len(self.net.layers) - 1
        for k, layer in enumerate(self.net.layers):
            a, b = self.h[k].at(j).chunk(2, dim=1)  # (n, C) x 2 pre-activations, fresh
            g = self.gate_views[k]
            torch.mul(a.tanh_(), b.sigmoid_(), out=g)
            if k < last:  # the last layer's residual output feeds nothing
                wr, br = self.res[k]
                out = self.h[k + 1].slots[j]  # (n, C): the next layer's input at (i, j)
                if layer.first:
                    torch.addmm(br, g, wr, out=out)
                else:
                    torch.addmm(self.h[k].slots[j], g, wr, out=out).add_(br)
        (w1, b1), (w2, b2) = self.head
        skips = torch.addmm(self.skip_b, self.gates, self.skip_w)  # (n, S)
        return torch.addmm(b2, torch.addmm(b1, skips.relu_(), w1).relu_(), w2)  # (n, K)

    def write(self, i: int, j: int, codes: Tensor) -> None:
        torch.index_select(self.net.embed.weight, 0, codes, out=self.h[0].slots[j])


@register_prior("gated-pixelcnn")
class GatedPixelCNNPrior(AutoregressivePrior):
    cpu_bf16_from_positions = 0  # measured: 1.60x (quick) and 1.79x (standard) the fp32 steps/s,
    # test bits/code within 0.002 of fp32 after 200 quick steps (README: Training precision)

    conditional = True

    @dataclass(frozen=True)
    class Config(FitConfig):
        embed_dim: int = 32  # code embedding width; 16 costs ~0.03 bits/code at quick
        channels: int = 28  # width of both stacks (gates compute 2x this)
        n_layers: int = 7  # gated layers; receptive field grows k//2 per layer
        first_kernel: int = 7  # odd; kernel of the first layer (its h conv excludes the centre)
        kernel: int = 3  # odd; kernel of the later layers
        skip_dim: int = 64  # width of the skip sum that feeds the head
        head_dim: int = 128  # hidden width of the 1x1 output head; 64 costs ~0.03 bits/code
        vertical_residual: bool = False  # residual adds in the vertical stack too (paper: none)

        def __post_init__(self) -> None:
            super().__post_init__()
            require_positive(self, "embed_dim", "channels", "n_layers", "skip_dim", "head_dim")
            for name in ("first_kernel", "kernel"):
                k = getattr(self, name)
                require(k >= 3 and k % 2 == 1, name, k, "odd and >= 3")

    @classmethod
    def preset(cls, preset: str) -> "GatedPixelCNNPrior.Config":
        check_preset(preset)
        return {
            "tiny": cls.Config(embed_dim=8, channels=8, n_layers=2, skip_dim=16, head_dim=16,
                               epochs=2, batch_size=8),
            "quick": cls.Config(epochs=15, max_steps=1000),  # ~3 CPU-min on 2000 16x16 grids
            # 32x32 grids: 12 layers see 3 + 11 rows up; on ADNI 2.51 bits/code in ~18 min on 2
            # cores (README, the standard table)
            "standard": cls.Config(channels=48, n_layers=12, skip_dim=96, head_dim=256,
                                   epochs=15, max_steps=1500),
            "full": cls.Config(embed_dim=64, channels=128, n_layers=15, first_kernel=7,
                               skip_dim=256, head_dim=512, epochs=60, batch_size=64, lr=5e-4),
        }[preset]

    def build_net(self) -> GatedPixelCNNNet:
        return GatedPixelCNNNet(self.num_codes, self.grid,
                                self.num_classes if self.uses_labels else 0, self.config)
