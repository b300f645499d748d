"""MaskGIT (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer") over code grids.

A bidirectional transformer (the pre-LN blocks of `transformer`, without the causal mask) reads
a grid in which some codes are replaced by a [MASK] token, plus a class token (one learned
token when unconditional), and predicts a code at every position. Training is the paper's: per
grid, draw r ~ U(0, 1), mask ceil(cos(pi/2 r) L) of the L positions at random, and minimise
the cross-entropy at the masked ones. Sampling starts from an all-masked grid and fills it in T
parallel steps; after step t, floor(L cos(pi/2 t/T)) positions are still masked (the paper's
cosine schedule), so T forward passes sample a grid where an autoregressive prior needs L.

The likelihood. The paper keeps, at each step, the positions whose sampled codes the model is
most confident about. That order depends on the codes drawn, and the probability of a grid is
then a sum over every order that could have produced it: no tractable likelihood. This prior
decodes in a fixed order instead: one permutation of the positions (drawn from `order_seed`),
cut into T groups G_1..G_T by the cosine schedule. Step t draws every position of G_t at once,
each from the model's softmax given the codes of the earlier groups, so the distribution the
sampler draws from is exactly

    p(x) = prod_t prod_{i in G_t} p(x_i | x_{G_1}, ..., x_{G_t-1})

a product of normalised conditionals: normalised by construction (the contract's 81-grid rule
checks it), and `log_prob` costs the same T forward passes as sampling. The positions of one
group are drawn independently of each other given the earlier groups: that is the price of
parallel decoding, and it is in the likelihood, not hidden from it. What the fixed order gives
up is the paper's confidence-based choice of positions; what it buys is bits/code on the same
scale as the autoregressive priors'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from priors.base import check_preset, gumbel_noise, register_prior, require, require_positive
from priors.netprior import FitConfig, NetPrior
from priors.training import Shard
from priors.transformer import Block, init_weights


def decoding_groups(grid: tuple[int, int], steps: int, seed: int) -> list[Tensor]:
    """The fixed decoding order: for each step, the raster indices it fills. A permutation of
    the L positions drawn from `seed`, cut by the cosine schedule (empty steps dropped)."""
    length = grid[0] * grid[1]
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    filled = [length - math.floor(length * math.cos(math.pi / 2 * t / steps))
              for t in range(steps + 1)]  # positions filled after step t: 0, ..., L
    return [order[a:b] for a, b in zip(filled, filled[1:]) if b > a]


class MaskGITNet(nn.Module):
    def __init__(self, num_codes: int, grid: tuple[int, int], num_classes: int,
                 cfg: "MaskGITPrior.Config") -> None:
        super().__init__()
        self.mask_id = num_codes  # the [MASK] token
        self.embed = nn.Embedding(num_codes + 1, cfg.dim)
        self.cls = nn.Embedding(max(1, num_classes), cfg.dim)  # class token, or one learned token
        self.rows = nn.Parameter(torch.randn(grid[0], 1, cfg.dim) * 0.02)
        self.cols = nn.Parameter(torch.randn(1, grid[1], cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.n_heads, cfg.mlp_ratio)
                                    for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_codes)
        self.apply(init_weights)

    def forward(self, tokens: Tensor, labels: Tensor | None = None) -> Tensor:
        """tokens (N, L) in [0, K] (K = [MASK]) -> logits (N, L, K) at every position."""
        n = tokens.shape[0]
        cls = self.cls(labels if labels is not None else tokens.new_zeros(n))[:, None]  # (N, 1, D)
        x = torch.cat([cls, self.embed(tokens) + (self.rows + self.cols).flatten(0, 1)], dim=1)
        for block in self.blocks:
            q, k, v = block.heads(x)  # 3 x (N, H, L+1, d)
            x = block.finish(x, F.scaled_dot_product_attention(q, k, v))  # every token sees all
        return self.head(self.ln_f(x[:, 1:]))


@register_prior("maskgit")
class MaskGITPrior(NetPrior):
    conditional = True
    cpu_bf16_from_positions = 1024  # measured: 0.89x the fp32 steps/s on 16x16 grids (quick),
    # 1.45x on 32x32 (standard) (README: Training precision)

    @dataclass(frozen=True)
    class Config(FitConfig):
        dim: int = 64  # model width D (embeddings, residual stream)
        n_layers: int = 4  # bidirectional transformer blocks
        n_heads: int = 4  # attention heads; must divide dim
        mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * dim
        steps: int = 8  # T: parallel decoding steps (and forward passes per log_prob)
        order_seed: int = 0  # seed of the fixed decoding order (a permutation of the positions)

        def __post_init__(self) -> None:
            super().__post_init__()
            require_positive(self, "dim", "n_layers", "n_heads", "mlp_ratio", "steps")
            require(self.dim % self.n_heads == 0, "dim", self.dim,
                    f"a multiple of n_heads={self.n_heads}")

    @classmethod
    def preset(cls, preset: str) -> "MaskGITPrior.Config":
        check_preset(preset)
        return {  # the transformer's sizes and step budgets: one forward + backward per step
            "tiny": cls.Config(dim=16, n_layers=2, n_heads=2, mlp_ratio=2, steps=4, epochs=2,
                               batch_size=8),
            "quick": cls.Config(lr=2e-3, epochs=8, max_steps=600),
            # 1024 positions per grid; on ADNI (one seed) 2.857 bits/code, FD-mri 0.28, second
            # to the transformer's; a 2 h fit on 2 cores, of which two val passes (2,160 grids x
            # 10 forwards) take ~50 min (`val_grids` caps them; the table's fit used all), and
            # its test bits/code another 65 min (README, the standard table)
            "standard": cls.Config(dim=128, n_layers=6, n_heads=4, steps=10, lr=1e-3, epochs=8,
                                   max_steps=1000),
            "full": cls.Config(dim=256, n_layers=8, n_heads=8, steps=12, epochs=60,
                               batch_size=64, lr=5e-4),
        }[preset]

    def __init__(self, config, *, num_codes: int, grid: tuple[int, int], num_classes: int = 0,
                 codebook: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(config, num_codes=num_codes, grid=grid, num_classes=num_classes,
                         codebook=codebook, device=device)
        self.groups = [g.to(self.device) for g in
                       decoding_groups(self.grid, config.steps, config.order_seed)]

    def build_net(self) -> MaskGITNet:
        return MaskGITNet(self.num_codes, self.grid, self.num_classes if self.uses_labels else 0,
                          self.config)

    def train_loss(self, codes: Tensor, labels: Tensor | None, *, model: nn.Module,
                   shard: Shard) -> Tensor:
        """(m,) cross-entropy (nats) per grid, averaged over its masked positions; masks drawn
        as in the paper, for the whole global batch (so every world size draws the same)."""
        flat = codes.flatten(1)  # (m, L)
        length = flat.shape[1]
        ratio = torch.cos(math.pi / 2 * torch.rand(shard.size, device=flat.device))[shard.pos]
        n_masked = (ratio * length).ceil().clamp(1, length)  # (m,)
        rank = torch.rand(shard.size, length, device=flat.device)[shard.pos].argsort(1).argsort(1)
        masked = rank < n_masked[:, None]  # (m, L): n_masked random positions per grid
        logits = model(flat.masked_fill(masked, self.net.mask_id), labels)  # (m, L, K)
        nats = F.cross_entropy(logits.transpose(1, 2).float(), flat, reduction="none")
        return (nats * masked).sum(1) / masked.sum(1)

    @torch.no_grad()
    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, codes.shape[0])
        self.net.eval()
        step = self.config.eval_batch_size
        out = [self._log_prob(codes[s:s + step].flatten(1),
                              None if labels is None else labels[s:s + step])
               for s in range(0, codes.shape[0], step)]
        return torch.cat(out) if out else codes.new_zeros(0, dtype=torch.float64)  # (N,) nats

    def _log_prob(self, flat: Tensor, labels: Tensor | None) -> Tensor:
        """(N, L) codes -> (N,) log p in nats: the decoding order replayed, T forwards."""
        tokens = torch.full_like(flat, self.net.mask_id)
        total = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        for group in self.groups:
            logp = self.net(tokens, labels)[:, group].float().log_softmax(-1)  # (N, |G|, K)
            total += logp.gather(-1, flat[:, group, None])[..., 0].double().sum(1)
            tokens[:, group] = flat[:, group]
        return total

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
        """(n, h, w) int64: T steps, each drawing one group of positions at once."""
        labels = self.check_labels(labels, n)
        self.net.eval()
        tokens = torch.full((n, self.grid[0] * self.grid[1]), self.net.mask_id, device=self.device)
        for group in self.groups:
            logits = self.net(tokens, labels)[:, group].float()  # (n, |G|, K)
            noise = gumbel_noise(logits.shape, generator, logits.device)
            tokens[:, group] = (logits + noise).argmax(-1)
        return tokens.view(n, *self.grid)
