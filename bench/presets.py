"""Benchmark presets: one name fixes data size, backbone, training budget and sample count."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import BenchError
from vqvae import TrainConfig, VQVAEConfig

PRESET_NAMES = ("tiny", "quick", "full")


@dataclass(frozen=True)
class Preset:
    name: str
    resolution: int  # px, square side of every image
    mni_sizes: tuple[int, int, int]  # (train, val, test) images of the embedded default
    vqvae: VQVAEConfig
    train: TrainConfig
    n_samples: int  # decoded samples scored per run (and real test images they are scored against)
    max_train_images: int  # cap on backbone training images (0 = all), keeps quick within budget


def get_preset(name: str) -> Preset:
    """tiny: tests, seconds. quick: 2 CPU cores, minutes. full: native resolution, for a GPU."""
    match name:
        case "tiny":
            return Preset(name="tiny", resolution=32, mni_sizes=(96, 24, 32),
                          vqvae=VQVAEConfig(hidden=16, res_blocks=1, res_hidden=8, num_codes=16,
                                            code_dim=8),
                          train=TrainConfig(epochs=2, batch_size=16, lr=3e-3), n_samples=32,
                          max_train_images=0)
        case "quick":
            return Preset(name="quick", resolution=64, mni_sizes=(2000, 250, 500),
                          vqvae=VQVAEConfig(),
                          train=TrainConfig(epochs=24, batch_size=32, lr=2e-3), n_samples=500,
                          max_train_images=4000)
        case "full":
            return Preset(name="full", resolution=256, mni_sizes=(16000, 2000, 4000),
                          vqvae=VQVAEConfig(hidden=128, res_blocks=2, res_hidden=64, downsample=8,
                                            num_codes=512, code_dim=64),
                          train=TrainConfig(epochs=60, batch_size=64, lr=1e-3), n_samples=4000,
                          max_train_images=0)
    raise BenchError(f"unknown preset {name!r}; available: {', '.join(PRESET_NAMES)}")
