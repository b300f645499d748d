"""MONAI's VQ-VAE (`monai.networks.nets.VQVAE`, Tudosiu et al. 2022) as a peer of ours.

MONAI is an optional extra, imported here only, when the peer is asked for. Its network is
sized to ours: one stride-2 4x4 conv per factor of 2 (channels width/2 ... width), the same
number of residual units (MONAI puts them at every level: two 3x3 convs each), the same K, D,
commitment weight and EMA decay, and a sigmoid output; `width` is then chosen so that the
parameter counts agree (within `tolerance`). Differences that remain, reported as such:
MONAI's residual units use 3x3+3x3 convs (ours 3x3+1x1) and it has no dead-code restarts.
Its race recipe (`RECIPE`, `data_init`): AdamW with warm-up and cosine decay, its codebook
initialised from encoder outputs, its quantizer in fp32 under autocast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from bench.errors import BenchError
from bench.peers.race import Contender, Recipe
from priors.base import seeded
from vqvae import VQVAE, VQVAEConfig

INSTALL = "pip install 'vq-prior-bench[monai]'"
RECIPE = Recipe(lr=1e-3, final_lr_frac=0.01)  # AdamW, warm-up then cosine decay in the budget


def require():
    """The monai module, or a one-line BenchError saying how to install it."""
    try:
        import monai
        from monai.networks.nets import VQVAE as _  # noqa: F401  (fails on a broken install)
    except ImportError as e:
        raise BenchError(f"peer 'monai' needs MONAI, which is not importable ({e}); "
                         f"install it with: {INSTALL}") from None
    return monai


@dataclass(frozen=True)
class MonaiConfig:
    channels: tuple[int, ...]  # channels at each level, one stride-2 conv per level
    num_res_layers: int  # residual units at every level, in encoder and decoder
    num_res_channels: tuple[int, ...]  # hidden channels of those units, per level
    num_embeddings: int  # K
    embedding_dim: int  # D
    commitment_cost: float  # beta
    decay: float  # EMA decay of the codebook

    def build(self) -> nn.Module:
        from monai.networks.nets import VQVAE as MonaiVQVAE

        levels = len(self.channels)
        return MonaiVQVAE(spatial_dims=2, in_channels=1, out_channels=1, channels=self.channels,
                          num_res_layers=self.num_res_layers,
                          num_res_channels=self.num_res_channels,
                          downsample_parameters=((2, 4, 1, 1),) * levels,
                          upsample_parameters=((2, 4, 1, 1, 0),) * levels,
                          num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                          commitment_cost=self.commitment_cost, decay=self.decay,
                          output_act="sigmoid", ddp_sync=False)


def config_for_width(cfg: VQVAEConfig, width: int) -> MonaiConfig:
    levels = int(math.log2(cfg.downsample))
    channels = (max(1, width // 2),) * (levels - 1) + (width,)
    return MonaiConfig(channels=channels,
                       num_res_layers=max(1, math.ceil(cfg.res_blocks / levels)),
                       num_res_channels=tuple(max(1, c * cfg.res_hidden // cfg.hidden)
                                              for c in channels),
                       num_embeddings=cfg.num_codes, embedding_dim=cfg.code_dim,
                       commitment_cost=cfg.beta, decay=cfg.ema_decay)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_config(cfg: VQVAEConfig, *, tolerance: float = 0.2) -> MonaiConfig:
    """The MONAI config whose parameter count is closest to ours (bisection on the width)."""
    target = n_parameters(VQVAE(cfg))
    size = lambda w: n_parameters(config_for_width(cfg, w).build())  # noqa: E731
    lo, hi = 2, 2
    while size(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) < target else (lo, mid)
    width = min((lo, hi), key=lambda w: abs(size(w) - target))
    ratio = size(width) / target
    if abs(ratio - 1) > tolerance:
        raise BenchError(f"no MONAI VQVAE within {tolerance:.0%} of our {target} parameters "
                         f"(closest: width {width}, ratio {ratio:.2f})")
    return config_for_width(cfg, width)


def build(cfg: VQVAEConfig, *, seed: int) -> Contender:
    """MONAI's VQVAE sized like `cfg`, trained by RECIPE. Its quantizer runs in fp32 under any
    autocast (MONAI turns autocast off there on CUDA only; ours does on every device)."""
    monai = require()
    mcfg = matched_config(cfg)
    with seeded(seed, torch.device("cpu")):  # built on the CPU, moved by the race
        model = mcfg.build()

    def forward(x: Tensor) -> tuple[Tensor, Tensor]:  # -> (reconstruction, vq loss)
        z = model.encode(x)
        with torch.autocast(x.device.type, enabled=False):
            z_q, loss = model.quantize(z.float())
        return model.decode(z_q), loss

    def codes(x: Tensor) -> Tensor:  # (B, h, w) int64
        with torch.autocast(x.device.type, enabled=False):
            return model.index_quantize(x).long()

    return Contender("monai", model, forward, codes, RECIPE, cfg.num_codes,
                     {"module": "monai.networks.nets.VQVAE", "monai": monai.__version__,
                      **asdict(mcfg), "codebook_care": "EMA (MONAI's EMAQuantizer, no restarts), "
                      "codebook and cluster sizes initialised from one batch's encoder outputs"},
                     prepare=lambda x: data_init(model, x, torch.Generator().manual_seed(seed)))


@torch.no_grad()
def data_init(model: nn.Module, x: Tensor, generator: torch.Generator) -> None:
    """MONAI's codebook set to K encoder outputs of the batch x drawn at random, each with an
    EMA cluster size of 1. MONAI starts the cluster sizes at 0, so every code unused at the
    first update is divided by the Laplace epsilon (1e-5) there and never used again; from its
    N(0, 1) codebook that left 1 code of 64 in use on mni (2 from kaiming_uniform)."""
    q = model.quantizer.quantizer  # monai EMAQuantizer inside its VectorQuantizer wrapper
    with torch.autocast(x.device.type, enabled=False):
        flat = model.encode(x).float().permute(0, 2, 3, 1).reshape(-1, q.embedding_dim)
    k = q.num_embeddings
    pick = torch.multinomial(torch.ones(len(flat)), k, replacement=len(flat) < k,
                             generator=generator).to(flat.device)
    q.embedding.weight.copy_(flat[pick])
    q.ema_w.copy_(flat[pick])
    q.ema_cluster_size.fill_(1.0)
