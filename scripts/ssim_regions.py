"""Recon SSIM of stored quick-preset `mni` backbones split into brain and background (the
README's note on why recon SSIM is not a stable number on `mni`).
Usage: python scripts/ssim_regions.py CACHE_DIR BACKBONE_DIR...
Example: python scripts/ssim_regions.py results/.cache results/backbones/*/"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data import DataConfig, load_dataset
from bench.presets import get_preset
from vqvae import decode_codes, load_backbone
from vqvae.train import encode_array, to_float

CPU = torch.device("cpu")


def window() -> torch.Tensor:  # the metric's window: Gaussian, 11 wide, sigma 1.5
    g = torch.exp(-(torch.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2)).double()
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    saa, sbb = F.conv2d(a * a, w) - mu_a ** 2, F.conv2d(b * b, w) - mu_b ** 2
    sab = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))


def main(cache_dir: str, backbones: list[str]) -> None:
    p = get_preset("quick")
    ds = load_dataset("mni", DataConfig(resolution=p.resolution, mni_sizes=p.mni_sizes, seed=0),
                      cache_dir=Path(cache_dir))
    test = np.asarray(ds.splits["test"].images)
    x, w = to_float(test, CPU).double(), window()
    brain = F.conv2d(x, w) > 0.1  # local mean above 0.1: inside the head
    inner = x[:, :, 5:-5, 5:-5]  # the pixels the SSIM map covers
    for d in backbones:
        model, _ = load_backbone(Path(d))
        r = decode_codes(model, encode_array(model, test, device=CPU), device=CPU).double()
        m = ssim_map(r, x, w)
        bg_r, bg_x = r[:, :, 5:-5, 5:-5][~brain], inner[~brain]
        print(f"{Path(d).name}: SSIM {m.mean():.3f}, brain {m[brain].mean():.3f}, background "
              f"{m[~brain].mean():.3f} ({(~brain).double().mean():.0%} of the map); background "
              f"std recon {bg_r.std():.4f}, originals {bg_x.std():.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
