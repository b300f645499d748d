"""Shared machinery of the autoregressive priors (raster order over the code grid).

A subclass supplies `build_net()`: an `nn.Module` whose `forward(codes, labels)` returns
teacher-forced logits (N, K, h, w) and whose `stepper(n, labels)` returns a cached `Stepper`.
This base class turns the logits into an exact `log_prob`, trains the net on it (`fit`, from
`NetPrior`), and samples either through the cache (default) or naively, one full forward per
position.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from priors.base import gumbel_noise
from priors.netprior import FitConfig, NetPrior, lr_lambda  # noqa: F401  (re-exported)
from priors.training import Shard


class Stepper(Protocol):
    """Incremental evaluation in raster order: `logits_at(i, j)` sees only codes written
    (by `write`) at positions before (i, j)."""

    def logits_at(self, i: int, j: int) -> Tensor: ...  # (n, K)
    def write(self, i: int, j: int, codes: Tensor) -> None: ...  # codes (n,)


class NaiveStepper:
    """The reference path: one full teacher-forced forward per position."""

    def __init__(self, net: nn.Module, codes: Tensor, labels: Tensor | None) -> None:
        self.net, self.codes, self.labels = net, codes, labels  # codes (n, h, w), filled as we go

    def logits_at(self, i: int, j: int) -> Tensor:
        return self.net(self.codes, self.labels)[:, :, i, j]  # (n, K)

    def write(self, i: int, j: int, codes: Tensor) -> None:
        self.codes[:, i, j] = codes


class CausalConv2d(nn.Module):
    """A conv with explicit padding (left, right, top, bottom) and a fixed 0/1 kernel mask.

    `forward` is the teacher-forced path; `cache()` gives the `ConvCache` that cached sampling
    fills in and evaluates position by position.
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int],
                 pad: tuple[int, int, int, int], mask: Tensor) -> None:
        super().__init__()
        assert mask.shape == kernel
        self.conv = nn.Conv2d(c_in, c_out, kernel)
        self.pad = pad
        self.register_buffer("mask", mask.float(), persistent=False)  # (kh, kw)

    @classmethod
    def raster(cls, c_in: int, c_out: int, k: int, kind: str) -> "CausalConv2d":
        """k x k 'same' conv seeing raster-earlier positions; kind 'A' excludes the centre."""
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (kind == "B"):] = 0
        mask[k // 2 + 1:] = 0
        return cls(c_in, c_out, (k, k), (k // 2, k // 2, k // 2, k // 2), mask)

    def weight(self) -> Tensor:
        return self.conv.weight * self.mask  # (c_out, c_in, kh, kw)

    def forward(self, x: Tensor) -> Tensor:  # (N, c_in, h, w) -> (N, c_out, h, w)
        return F.conv2d(F.pad(x, self.pad), self.weight(), self.conv.bias)

    def cache(self, n: int, grid: tuple[int, int], like: Tensor) -> "ConvCache":
        return ConvCache(self, n, grid, like)


class ConvCache:
    """Cached evaluation of one `CausalConv2d` in raster order (Ramachandran et al. 2017).

    The layer's input lives in a zero-padded channels-last buffer (n, h+pads, w+pads, c_in)
    that the sampler fills position by position (through `slots`). Kernel rows above the
    current row only see finished rows, so `start_row(i)` computes their part of the whole output row i at once
    (one im2col copy and one matmul, plus the bias and any per-row `extra`); `at(j)` then adds
    the current row's taps, a run of positions ending at (or just before) j, as one addmm on a
    strided window of the buffer. Per-row tensors are unbound into lists up front, so the
    per-position path runs no indexing ops: at small batch sizes it is bound by per-op
    overhead, not FLOPs.
    """

    def __init__(self, conv: CausalConv2d, n: int, grid: tuple[int, int], like: Tensor) -> None:
        left, right, top, bottom = conv.pad
        mask = conv.mask
        taps = int(mask[top].sum())
        if mask[top + 1:].any() or not bool(mask[top, :taps].all()) or not bool(mask[:top].all()):
            raise ValueError("ConvCache needs full rows above the current one, a left-aligned "
                             "run of taps in it and nothing below")
        self.n, self.w, self.top, self.left, self.taps = n, grid[1], top, left, taps
        self.c_in, self.c_out = conv.conv.in_channels, conv.conv.out_channels
        weight = conv.weight()  # (c_out, c_in, kh, kw)
        self.kh, self.kw = weight.shape[2:]
        flat = weight.permute(2, 3, 1, 0)  # (kh, kw, c_in, c_out): im2col order
        self.w_rows = flat.reshape(-1, self.c_out)  # all kernel rows, for full_row
        self.w_above = flat[:top].reshape(-1, self.c_out)  # (top*kw*c_in, c_out)
        self.w_now = flat[top, :taps].reshape(-1, self.c_out)  # (taps*c_in, c_out)
        self.bias = conv.conv.bias if conv.conv.bias is not None else like.new_zeros(self.c_out)
        self.buf = like.new_zeros(n, grid[0] + top + bottom, grid[1] + left + right, self.c_in)
        self.above: list[Tensor] = []  # per position j of the current row: (n, c_out)
        self.windows: list[Tensor] = []  # (n, taps*c_in) views: the current-row taps of j
        self.slots: list[Tensor] = []  # (n, c_in) views: where the input at (i, j) goes

    def _rows_matmul(self, first: int, n_rows: int, weight: Tensor) -> Tensor:
        """(w, n, c_out): bias + buffer rows first.. first+n_rows-1 (padded coordinates)
        convolved with `weight` (n_rows*kw*c_in, c_out), every output position of a row."""
        w, n, c, b = self.w, self.n, self.c_in, self.buf
        cols = b[:, first:first + n_rows].as_strided(
            (w, n, n_rows, self.kw, c), (c, b.stride(0), b.stride(1), c, 1),
            b.storage_offset() + first * b.stride(1))  # window of output j, no copy yet
        return torch.addmm(self.bias, cols.reshape(w * n, -1), weight).view(w, n, self.c_out)

    def start_row(self, i: int, extra: Tensor | None = None) -> None:
        """Prepare output row i; the rows above i must be complete in the buffer. `extra`,
        broadcastable to (w, n, c_out), is added to every position of the row."""
        n, w, c = self.n, self.w, self.c_in
        if self.top:
            above = self._rows_matmul(i, self.top, self.w_above)  # (w, n, c_out)
        else:
            above = self.bias.expand(w, n, -1)
        if extra is not None:
            above = above + extra
        elif self.taps == 0 and not self.top:
            above = above.clone()  # `at` hands these out to be updated in place
        self.above = list(above.unbind(0))
        row = self.buf[:, i + self.top]  # (n, w+pads, c_in)
        self.windows = list(row.as_strided((w, n, self.taps * c), (c, row.stride(0), 1),
                                           row.storage_offset()).unbind(0))
        self.slots = list(row[:, self.left:self.left + w].unbind(1))

    def at(self, j: int) -> Tensor:
        """(n, c_out): the conv's output at (i, j), a tensor the caller may update in place."""
        if self.taps == 0:
            return self.above[j]  # used once per row: safe to hand out
        return torch.addmm(self.above[j], self.windows[j], self.w_now)

    def row_input(self, i: int) -> Tensor:  # (n, w, c_in): the unpadded input row i, writable
        return self.buf[:, i + self.top, self.left:self.left + self.w]

    def full_row(self, i: int) -> Tensor:
        """(w, n, c_out): output row i with every kernel row; rows up to i must be complete."""
        return self._rows_matmul(i, self.kh, self.w_rows)


def transposed(layer: nn.Linear, out_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(W^T (in, out), bias) of a Linear for addmm, optionally scaling each output."""
    weight, bias = layer.weight, layer.bias
    if out_scale is not None:
        weight, bias = weight * out_scale[:, None], bias * out_scale
    return weight.t(), bias


def pointwise(layer: nn.Linear, x: Tensor) -> Tensor:
    """A 1x1 conv as a Linear on the channel axis: (N, C, h, w) -> (N, C', h, w)."""
    return layer(x.movedim(1, -1)).movedim(-1, 1)


class AutoregressivePrior(NetPrior):
    """Exact likelihood from teacher-forced logits; cached and naive sampling (fit: NetPrior)."""

    @abstractmethod
    def build_net(self) -> nn.Module:
        """The network: `forward(codes (N,h,w), labels) -> (N,K,h,w)`, `from_embedding(x
        (N,E,h,w), labels)` (the same after the code embedding), `stepper(n, labels)`."""

    # -- likelihood ----------------------------------------------------------------------------

    def logits(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (N, K, h, w): position (i, j) sees only codes before it."""
        codes = self.check_codes(codes)
        return self.net(codes, self.check_labels(labels, codes.shape[0]))

    @torch.no_grad()
    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, codes.shape[0])
        self.net.eval()
        out = []
        for s in range(0, codes.shape[0], self.config.eval_batch_size):
            c = codes[s:s + self.config.eval_batch_size]
            lab = None if labels is None else labels[s:s + self.config.eval_batch_size]
            out.append(-self._nll(c, lab).double().sum(dim=(1, 2)))
        return torch.cat(out) if out else codes.new_zeros(0, dtype=torch.float64)  # (N,) nats

    def _nll(self, codes: Tensor, labels: Tensor | None, net: nn.Module | None = None) -> Tensor:
        logits = (net or self.net)(codes, labels).float()  # (N, K, h, w)
        return F.cross_entropy(logits, codes, reduction="none")  # (N, h, w) nats

    def train_loss(self, codes: Tensor, labels: Tensor | None, *, model: nn.Module,
                   shard: Shard) -> Tensor:
        return self._nll(codes, labels, model)  # (m, h, w) nats

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator, labels: Tensor | None = None,
               use_cache: bool = True) -> Tensor:
        """(n, h, w) int64. `use_cache=False` runs one full forward per position (reference)."""
        labels = self.check_labels(labels, n)
        self.net.eval()
        codes = torch.zeros(n, *self.grid, dtype=torch.int64, device=self.device)
        stepper = self.net.stepper(n, labels) if use_cache else NaiveStepper(self.net, codes, labels)
        return self._sample_loop(stepper, codes, generator)

    def _sample_loop(self, stepper: Stepper, codes: Tensor, generator: torch.Generator) -> Tensor:
        """Raster order over the grid, into `codes`. The Gumbel noise of a row is drawn at once:
        the same draws as one call per position."""
        n, (h, w) = codes.shape[0], self.grid
        drawn = codes.new_zeros(h * w, n)  # raster position -> the n codes drawn there
        out = drawn.unbind(0)
        for p in range(h * w):
            i, j = divmod(p, w)
            if j == 0:
                noise = gumbel_noise((w, n, self.num_codes), generator, codes.device).unbind(0)
            torch.argmax(stepper.logits_at(i, j).float() + noise[j], dim=-1, out=out[p])
            stepper.write(i, j, out[p])
        codes.copy_(drawn.view(h, w, n).permute(2, 0, 1))
        return codes

    @torch.no_grad()
    def stepwise_logits(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """(N, K, h, w) logits of `codes` computed through the sampling cache, position by
        position; equals `logits(codes)` up to float error (tested)."""
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, codes.shape[0])
        self.net.eval()
        stepper = self.net.stepper(codes.shape[0], labels)
        out = []
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                out.append(stepper.logits_at(i, j))
                stepper.write(i, j, codes[:, i, j])
        return torch.stack(out, dim=-1).unflatten(-1, self.grid)
