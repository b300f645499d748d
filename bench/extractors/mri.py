"""The default extractor: a small conv encoder trained self-supervised (SimCLR / NT-Xent) on the
real training split, then frozen. Features are its pooled penultimate layer.

Cached per (training images, config, seed) as safetensors + JSON; identified by a content hash
of its weights, so a score names exactly the features it was computed on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import ArtefactError, BenchError
from bench.extractors.augment import two_views
from bench.extractors.base import FeatureExtractor
from bench.store import Artefact, Store, load_tensors, read_json, save_tensors, write_json_atomic
from priors import NullProgress, Progress
from vqvae.io import tensors_hash
from vqvae.train import (Checkpoint, NullCheckpoint, TrainState, advance, resume, save_if_due,
                         start_progress)

PRESETS = ("tiny", "quick", "standard", "full")
CACHE_FORMAT = 1  # bump when the architecture or training recipe changes meaning


@dataclass(frozen=True)
class MriConfig:
    width: int = 16  # channels of the stem; stages are width x (1, 2, 4, 8), features 8 * width
    steps: int = 128  # optimiser steps; quick is ~1 min on 2 CPU cores at 64 px
    batch_size: int = 96  # images per step (two views each)
    lr: float = 2e-3  # AdamW peak learning rate, cosine decay
    weight_decay: float = 1e-4  # AdamW
    temperature: float = 0.2  # NT-Xent softmax temperature
    proj_dim: int = 64  # projection head output, discarded after training

    def __post_init__(self) -> None:
        for name in ("width", "steps", "batch_size", "proj_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for contrastive pairs, got {self.batch_size}")
        if not (self.lr > 0 and self.temperature > 0):
            raise ValueError(f"lr and temperature must be > 0, got {self.lr} and {self.temperature}")

    @property
    def dim(self) -> int:
        return 8 * self.width


def preset_config(preset: str) -> MriConfig:
    """tiny: seconds, for tests. quick: about a minute on 2 CPU cores (standard: 128 px). full:
    for a GPU."""
    match preset:
        case "tiny":
            return MriConfig(width=4, steps=3, batch_size=8)
        case "quick":
            return MriConfig()
        case "standard":  # 128 px: 4x the pixels of quick per step
            return MriConfig(steps=160, batch_size=64)
        case "full":
            return MriConfig(width=32, steps=3000, batch_size=256, lr=1e-3)
    raise BenchError(f"unknown extractor preset {preset!r}; available: {', '.join(PRESETS)}")


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    # BatchNorm: several times faster than GroupNorm on CPU; eval uses running stats, so
    # features stay independent of the batch they are computed in.
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.SiLU()]


class Encoder(nn.Module):
    """(B, 1, H, W) in [0, 1] -> (B, 8*width) pooled features; any H, W >= 16."""

    def __init__(self, cfg: MriConfig) -> None:
        super().__init__()
        w = cfg.width
        layers = _conv(1, w, 2)  # the full-resolution stage is a single strided conv: it dominates cost
        for c in (w, 2 * w, 4 * w):
            layers += _conv(c, 2 * c, 2) + _conv(2 * c, 2 * c, 1)
        self.stages = nn.Sequential(*layers)  # (B, 8w, H/16, W/16)
        self.head = nn.Sequential(nn.Linear(8 * w, 8 * w), nn.SiLU(), nn.Linear(8 * w, cfg.proj_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.stages(2 * x - 1), 1).flatten(1)  # (B, 8w)


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """SimCLR loss for z (2n, p): row i and row i+n are the two views of one image."""
    n = len(z) // 2
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature  # (2n, 2n)
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def train_encoder(images: np.ndarray, cfg: MriConfig, *, seed: int, device: torch.device,
                  progress: Progress | None = None,
                  checkpoint: Checkpoint = NullCheckpoint()) -> tuple[Encoder, dict[str, float]]:
    """Train an encoder on uint8 images (N, H, W); returns it frozen (eval) with stats.
    Continues from the checkpoint's last state if it holds one (bitwise, on CPU)."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Encoder(cfg).to(device)
    generators = {"augment": torch.Generator(device=device).manual_seed(seed),
                  "batches": torch.Generator().manual_seed(seed + 1)}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    parts = {"model": model, "opt": opt, "sched": sched}
    run = resume(checkpoint.load(), parts, generators,
                 TrainState(values={"loss": math.nan, "train_s": 0.0}))
    data = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))  # memmaps are read-only
    progress, start = progress or NullProgress(), time.perf_counter() - run.values["train_s"]
    start_progress(progress, "mri extractor: self-supervised training", cfg.steps, run)
    try:
        for step in range(run.step, cfg.steps):
            idx = torch.randint(0, len(data), (min(cfg.batch_size, len(data)),),
                                generator=generators["batches"])
            x = data[idx].to(device).float().div_(255).unsqueeze(1)  # (B, 1, H, W)
            loss = nt_xent(model.head(model(two_views(x, generators["augment"]))), cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run.step = step + 1
            run.values.update(loss=loss.item(), train_s=time.perf_counter() - start)
            advance(progress, run, loss=run.values["loss"])
            save_if_due(checkpoint, run, parts, generators)
    finally:
        progress.stop()
    model.eval().requires_grad_(False)
    return model, {"final_loss": run.values["loss"], "train_s": time.perf_counter() - start}


class MriExtractor(FeatureExtractor):
    name = "mri"

    def __init__(self, model: Encoder, cfg: MriConfig, weights_hash: str, device: torch.device) -> None:
        self.model, self.cfg, self.device = model.to(device).eval(), cfg, device
        self.id = mri_id(weights_hash)
        self.dim = cfg.dim

    def _embed(self, x: Tensor) -> Tensor:
        return self.model(x.float())


def mri_id(weights_hash: str) -> str:
    """The id records name an mri extractor by: its weights hash, shortened."""
    return f"mri-{weights_hash[:16]}"


def _images_hash(images: np.ndarray) -> str:
    arr = np.ascontiguousarray(images)
    if not arr.flags.writeable:  # read-only memmap: torch wants writable memory
        arr = arr.copy()
    return tensors_hash({"images": torch.from_numpy(arr)}, {})


def _weights_hash(model: Encoder, cfg: MriConfig) -> str:
    state = {k: v.reshape(-1) for k, v in model.state_dict().items()}  # BN's step counter is 0-dim
    return tensors_hash(state, dataclasses.asdict(cfg))


def _load(directory: Path, cfg: MriConfig, device: torch.device) -> MriExtractor:
    """Load a stored encoder (the store verified its files); a mismatch is an ArtefactError."""
    fix = "run the same command again with --force to retrain it"
    try:
        record = read_json(directory / "extractor.json")
        state = load_tensors(directory / "encoder.safetensors")
        model = Encoder(cfg)
        model.load_state_dict(state)
    except (ArtefactError, RuntimeError) as e:
        raise ArtefactError(f"stored mri extractor {directory} is unusable "
                            f"({' '.join(str(e).split())[:200]}); {fix}") from None
    digest = _weights_hash(model, cfg)
    if record.get("weights_hash") != digest:
        raise ArtefactError(f"stored mri extractor in {directory} does not match its recorded "
                            f"hash; {fix}")
    return MriExtractor(model.eval().requires_grad_(False), cfg, digest, device)


def build_mri(*, train_images: np.ndarray, store: Store, device: torch.device, seed: int,
              preset: str = "quick", progress=None, force: bool = False) -> MriExtractor:
    """Load the stored encoder for (images, preset config, seed) or train and store it."""
    cfg = preset_config(preset)
    if train_images.ndim != 3 or train_images.dtype != np.uint8 or len(train_images) < 2:
        raise BenchError(f"mri extractor needs training images as a (N>=2, H, W) uint8 array, got "
                         f"{train_images.shape} {train_images.dtype}")
    if min(train_images.shape[1:]) < 16:
        raise BenchError(f"mri extractor needs images of at least 16x16 px, got {train_images.shape[1:]}")
    key_obj = {"format": CACHE_FORMAT, "images": _images_hash(train_images),
               "config": dataclasses.asdict(cfg), "seed": seed}
    art = Artefact.of("extractors", key_obj, prefix=f"mri-{preset}-")

    def build(directory: Path) -> None:
        model, stats = train_encoder(train_images, cfg, seed=seed, device=device,
                                     progress=progress, checkpoint=store.checkpoint(art))
        save_tensors(directory / "encoder.safetensors", model.state_dict())
        write_json_atomic(directory / "extractor.json",
                   key_obj | {"weights_hash": _weights_hash(model, cfg), "preset": preset,
                              "stats": stats, "device": str(device)})

    extractor, _ = store.get_or_build(art, build, lambda d: _load(d, cfg, device), force=force)
    return extractor


def find_stored_mri(store: Store, extractor_id: str, device: torch.device) -> MriExtractor | None:
    """The stored encoder a record names by `extractor_id` (verified), never retrained; None
    when the store holds no such encoder."""
    for directory in store.finished("extractors"):
        try:
            info = read_json(directory / "extractor.json")
        except ArtefactError:
            continue  # not an mri extractor's folder
        if mri_id(str(info.get("weights_hash"))) != extractor_id:
            continue
        store.verify_dir(directory)
        try:
            cfg = MriConfig(**info["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtefactError(f"stored mri extractor {directory} has an unusable config "
                                f"({e}); it was written by another version of bench") from None
        return _load(directory, cfg, device)
    return None
