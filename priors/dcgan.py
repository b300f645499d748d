"""DCGAN (Radford et al. 2015) over code grids.

The generator maps noise (and a class) to K logits per position through transposed convs with
batch norm and ReLU. It is trained through straight-through Gumbel-softmax codes that are
embedded with the frozen codebook, so the discriminator (strided convs, LeakyReLU, no norm on
the first layer, spectral norm or batch norm after) sees real and generated grids in the same
space. Class conditioning: a class embedding concatenated to the noise and a projection term
in the discriminator (Miyato & Koyama 2018). No likelihood: `log_prob` raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from priors.base import (ADDED_LATER, Checkpoint, CodeSet, NullCheckpoint, Prior, PriorError,
                         Progress, check_preset, gumbel_argmax, register_prior, require,
                         require_positive, seeded, step_budget)
from priors.training import FitLoop, Shard
from trainkit import data_parallel


def hard_gumbel_softmax(logits: Tensor, tau: float, shard: Shard) -> Tensor:
    """`F.gumbel_softmax(logits, tau, hard=True, dim=1)` (one-hot forward, softmax gradient
    backward) with its noise drawn for the whole global batch and this rank's rows taken."""
    shape = (shard.size, *logits.shape[1:])
    noise = -torch.empty(shape, device=logits.device).exponential_().log()[shard.pos]
    soft = ((logits + noise) / tau).softmax(1)  # (n, K, h, w)
    hard = torch.zeros_like(soft).scatter_(1, soft.argmax(1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class Generator(nn.Module):
    def __init__(self, num_codes: int, grid: tuple[int, int], num_classes: int,
                 cfg: "DCGANPrior.Config") -> None:
        super().__init__()
        self.grid, c = grid, cfg.channels * 2 ** cfg.n_stages
        self.start = tuple(math.ceil(s / 2 ** cfg.n_stages) for s in grid)  # (h0, w0)
        self.label = nn.Embedding(num_classes, cfg.noise_dim) if num_classes else None
        self.project = nn.Linear(cfg.noise_dim * (2 if num_classes else 1),
                                 c * self.start[0] * self.start[1])
        layers: list[nn.Module] = [nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(cfg.n_stages):  # each doubles h and w, halves channels
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        self.body = nn.Sequential(*layers, nn.Conv2d(c, num_codes, 3, padding=1))

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:  # (N, Z) -> (N, K, h, w)
        if self.label is not None:
            z = torch.cat([z, self.label(labels)], dim=1)
        x = self.project(z).view(z.shape[0], -1, *self.start)  # (N, C, h0, w0)
        return self.body(x)[:, :, :self.grid[0], :self.grid[1]]  # crop what ceil added


class Discriminator(nn.Module):
    def __init__(self, code_dim: int, grid: tuple[int, int], num_classes: int,
                 cfg: "DCGANPrior.Config") -> None:
        super().__init__()
        norm = spectral_norm if cfg.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [nn.Conv2d(code_dim, cfg.channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c, size = cfg.channels, [s // 2 for s in grid]
        for _ in range(cfg.n_stages - 1):  # strided convs halve h and w, double channels
            layers.append(norm(nn.Conv2d(c, 2 * c, 4, 2, 1)))
            layers += [] if cfg.spectral_norm else [nn.BatchNorm2d(2 * c)]
            layers.append(nn.LeakyReLU(0.2))
            c, size = 2 * c, [s // 2 for s in size]
        self.body = nn.Sequential(*layers)
        self.minibatch_std = cfg.minibatch_std
        self.features = (c + cfg.minibatch_std) * max(1, size[0]) * max(1, size[1])
        self.out = norm(nn.Linear(self.features, 1))
        self.label = norm(nn.Embedding(num_classes, self.features)) if num_classes else None

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:  # (N, D, h, w) -> (N,)
        f = self.body(x)  # (N, C, h', w')
        if self.minibatch_std:  # how much the batch varies, one more channel (Karras et al. 2018)
            spread = f.std(dim=0, unbiased=False).mean()  # a fit's shard has >= 1 row
            f = torch.cat([f, spread.expand(len(f), 1, *f.shape[2:])], dim=1)
        f = f.flatten(1)  # (N, F)
        score = self.out(f)[:, 0]
        if self.label is not None:
            score = score + (self.label(labels) * f).sum(dim=1)  # projection term
        return score


@register_prior("dcgan")
class DCGANPrior(Prior):
    has_likelihood = False
    conditional = True

    @dataclass(frozen=True)
    class Config:
        noise_dim: int = 64  # dimension of the generator's Gaussian noise
        channels: int = 64  # discriminator width at full resolution; generator at its last stage
        n_stages: int = 2  # up-sampling (G) / down-sampling (D) stages, each x2 / /2
        epochs: int = 30  # passes over the training grids
        max_steps: int = 0  # cap on D+G steps (0: epochs decide); bounds a preset's cost on big datasets
        batch_size: int = 64  # grids per step (one D and one G update)
        lr: float = 2e-4  # Adam learning rate for both nets (DCGAN paper)
        # D's learning rate is lr times this (TTUR, Heusel et al. 2017)
        d_lr_scale: float = field(default=1.0, metadata=ADDED_LATER)
        # the batch's feature spread (Karras et al. 2018) as one more input of D's last, linear
        # layer: D can reward or penalise a batch's spread, linearly (under DDP, the spread of
        # each rank's rows, so a DDP fit no longer equals the one-process fit)
        minibatch_std: bool = field(default=False, metadata=ADDED_LATER)
        beta1: float = 0.5  # Adam beta1 (DCGAN paper); beta2 stays 0.999
        tau: float = 1.0  # Gumbel-softmax temperature of the generated codes
        spectral_norm: bool = True  # D layers after the first: spectral norm, else batch norm
        sample_mode: str = "sample"  # "sample": draw from G's logits; "argmax": take the mode

        def __post_init__(self) -> None:
            require_positive(self, "noise_dim", "channels", "n_stages", "epochs", "batch_size")
            require(self.max_steps >= 0, "max_steps", self.max_steps, ">= 0 (0 = no cap)")
            require(self.lr > 0, "lr", self.lr, "> 0")
            require(self.d_lr_scale > 0, "d_lr_scale", self.d_lr_scale, "> 0")
            require(type(self.minibatch_std) is bool, "minibatch_std", self.minibatch_std,
                    "true or false")
            require(0 <= self.beta1 < 1, "beta1", self.beta1, "in [0, 1)")
            require(self.tau > 0, "tau", self.tau, "> 0")
            require(self.sample_mode in ("sample", "argmax"), "sample_mode", self.sample_mode,
                    "'sample' or 'argmax'")

    @classmethod
    def preset(cls, preset: str) -> "DCGANPrior.Config":
        check_preset(preset)
        return {
            "tiny": cls.Config(noise_dim=8, channels=8, n_stages=1, epochs=2, batch_size=8),
            "quick": cls.Config(max_steps=1000),  # 30 epochs (~940 steps) on 2000 16x16 grids
            # 4x4 -> 32x32. As first built (D and G at one lr, no minibatch spread) it collapsed
            # on ADNI (FD-mri 8.54, recall 0.008); D at 4x the lr and seeing the batch's spread
            # were chosen by the screen in docs/standard-preset.md
            "standard": cls.Config(n_stages=3, max_steps=1500, d_lr_scale=4.0, minibatch_std=True),
            "full": cls.Config(noise_dim=128, channels=128, n_stages=3, epochs=200),
        }[preset]

    def __init__(self, config, *, num_codes: int, grid: tuple[int, int], num_classes: int = 0,
                 codebook: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(config, num_codes=num_codes, grid=grid, num_classes=num_classes,
                         codebook=codebook, device=device)
        if codebook is None:
            raise PriorError("dcgan needs the frozen codebook (codebook=(K, D) float tensor, "
                             "carried by the code export); got None")
        if codebook.dim() != 2 or codebook.shape[0] != num_codes:
            raise PriorError(f"codebook must be ({num_codes}, D), got {tuple(codebook.shape)}")
        cb = codebook.detach().float().to(self.device)
        self.code_vectors = (cb - cb.mean(0)) / cb.std().clamp_min(1e-8)  # (K, D) unit scale
        with seeded(0, self.device):  # a fresh instance is the same nets every time
            self._build()

    def _build(self) -> None:
        classes = self.num_classes if self.uses_labels else 0
        self.gen = Generator(self.num_codes, self.grid, classes, self.config).to(self.device)
        self.disc = Discriminator(self.code_vectors.shape[1], self.grid, classes,
                                  self.config).to(self.device)
        self.gen.eval()

    def embed(self, one_hot: Tensor) -> Tensor:  # (N, K, h, w) -> (N, D, h, w)
        return torch.einsum("nkhw,kd->ndhw", one_hot, self.code_vectors)

    def fit(self, train: CodeSet, val: CodeSet, *, seed: int, progress: Progress,
            checkpoint: Checkpoint = NullCheckpoint()) -> dict[str, float]:
        if len(train) == 0:
            raise PriorError("fit needs a non-empty train split")
        with seeded(seed, self.device):  # init and training noise
            self._build()
            return self._train(train, seed, progress, checkpoint)

    def _train(self, train: CodeSet, seed: int, progress: Progress,
               checkpoint: Checkpoint) -> dict[str, float]:
        cfg = self.config
        codes = self.check_codes(train.codes)
        labels = self.check_labels(train.labels, len(train))
        opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr * cfg.d_lr_scale,
                                 betas=(cfg.beta1, 0.999))
        loop = FitLoop(n=len(train), batch_size=cfg.batch_size, seed=seed, device=self.device,
                       total_steps=step_budget(len(train), cfg.batch_size, cfg.epochs,
                                               cfg.max_steps),
                       checkpoint=checkpoint, progress=progress)
        run = loop.start(f"fit {self.name}",
                         {"gen": self.gen, "disc": self.disc, "opt_g": opt_g, "opt_d": opt_d},
                         {"sums": [0.0, 0.0], "steps": 0, "losses": [math.nan, math.nan]})
        gen, disc = data_parallel(self.gen), data_parallel(self.disc)
        self.gen.train()
        try:
            for step in loop.steps():
                shard = loop.batch(step)
                losses = self._step(opt_g, opt_d, codes[shard.idx],
                                    None if labels is None else labels[shard.idx],
                                    nets=(gen, disc), loop=loop, shard=shard)
                run["sums"] = [total + x for total, x in zip(run["sums"], losses)]
                run["steps"] += 1
                if loop.epoch_end(step):
                    run["losses"] = [total / run["steps"] for total in run["sums"]]
                    loop.advance(g_loss=run["losses"][1], d_loss=run["losses"][0])  # epoch means
                    run.update(sums=[0.0, 0.0], steps=0)
        finally:
            progress.stop()
            self.gen.eval()
        loop.finish(self.gen, self.disc)
        return {"d_loss": run["losses"][0], "g_loss": run["losses"][1],
                **loop.times()}

    def _step(self, opt_g, opt_d, real_codes: Tensor, labels: Tensor | None, *,
              nets: tuple[nn.Module, nn.Module], loop: FitLoop,
              shard: Shard) -> tuple[float, float]:
        gen, disc = nets  # in DistributedDataParallel under torch.distributed
        real = self.embed(F.one_hot(real_codes, self.num_codes).movedim(-1, 1).float())
        # noise for the whole global batch, this rank's rows: ranks never share noise
        z = torch.randn(shard.size, self.config.noise_dim, device=self.device)[shard.pos]
        fake = self.embed(hard_gumbel_softmax(gen(z, labels), self.config.tau,
                                              shard))  # (n, D, h, w)
        d_loss = (loop.mean(F.softplus(-disc(real, labels)), shard)
                  + loop.mean(F.softplus(disc(fake.detach(), labels)), shard))  # BCE, real=1 fake=0
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = loop.mean(F.softplus(-disc(fake, labels)), shard)  # non-saturating
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return loop.value(d_loss), loop.value(g_loss)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
        labels = self.check_labels(labels, n)
        z = torch.randn(n, self.config.noise_dim, generator=generator, device=generator.device)
        logits = self.gen(z.to(self.device), labels).movedim(1, -1)  # (n, h, w, K)
        if self.config.sample_mode == "argmax":
            return logits.argmax(dim=-1)
        return gumbel_argmax(logits.reshape(-1, self.num_codes), generator).view(n, *self.grid)

    def state_dict(self) -> dict[str, Tensor]:
        return {**{f"gen.{k}": v.detach().clone() for k, v in self.gen.state_dict().items()},
                **{f"disc.{k}": v.detach().clone() for k, v in self.disc.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for prefix, net in (("gen.", self.gen), ("disc.", self.disc)):
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                 if k.startswith(prefix)})
        self.gen.eval()
