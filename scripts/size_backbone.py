"""Backbone sizing sweep (how the `standard` preset was chosen; docs/standard-preset.md):
train each named configuration on a dataset's training split (at most 4,000 images, drawn as
`bench run` draws them) and print recon SSIM / PSNR on its test split and codes used.
Usage: python scripts/size_backbone.py SPEC RESOLUTION CACHE_DIR NAME...   (NAMES: see CONFIGS)
Example: python scripts/size_backbone.py adni:../shared/data/adni/AD_NC 128 size-out h64-K256-e30"""
import json, sys, time
import numpy as np
import torch
from bench import metrics
from bench.data import load_dataset
from bench.data.base import DataConfig
from priors import NullProgress
from vqvae.model import VQVAE, VQVAEConfig
from vqvae.train import TrainConfig, decode_codes, encode_array, to_float, train_vqvae


def trunk(hidden: int, **kw) -> dict:
    return {"hidden": hidden, "res_hidden": hidden // 2, "num_codes": 256, "code_dim": 32, **kw}


CONFIGS = {  # name: (VQVAEConfig overrides at 4x downsampling, TrainConfig overrides)
    **{f"h64-K256-e{e}": (trunk(64), {"epochs": e}) for e in (10, 20, 30, 40, 80)},
    "h64-K256-lr1e-3-e20": (trunk(64), {"epochs": 20, "lr": 1e-3}),
    "h64-K256-D16-e20": (trunk(64, code_dim=16), {"epochs": 20}),
    "h64-K512-e20": (trunk(64, num_codes=512), {"epochs": 20}),
    "h64-rb3-K256-e20": (trunk(64, res_blocks=3), {"epochs": 20}),
    "h96-K256-e20": (trunk(96), {"epochs": 20}),
    "h96-K256-e40": (trunk(96), {"epochs": 40}),
    "h128-K256-D64-e20": (trunk(128, code_dim=64), {"epochs": 20}),
    "h128-K256-e40": (trunk(128), {"epochs": 40}),
}


def main(spec: str, resolution: int, cache: str, names: list[str]) -> None:
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown config(s) {unknown}; available: {', '.join(CONFIGS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = load_dataset(spec, DataConfig(resolution=resolution), cache_dir=cache)
    train = np.asarray(ds.splits["train"].images)
    if len(train) > 4000:  # as bench.stages.backbone_train_images with seed 0
        train = train[np.sort(np.random.default_rng(0).choice(len(train), 4000, replace=False))]
    test = np.asarray(ds.splits["test"].images)
    for name in names:
        vq, tr = CONFIGS[name]
        model = VQVAE(VQVAEConfig(downsample=4, **vq), seed=0)
        t0 = time.perf_counter()
        summary = train_vqvae(model, train, TrainConfig(**{"batch_size": 32, "lr": 2e-3, **tr}),
                              device=device, progress=NullProgress())
        train_s = time.perf_counter() - t0
        codes = encode_array(model, test, device=device)
        recon, x = decode_codes(model, codes, device=device), to_float(test, torch.device("cpu"))
        counts = metrics.code_histogram(codes, vq["num_codes"])
        print(json.dumps({"name": name, "steps": int(summary["steps"]), "train_s": round(train_s, 1),
                          "device": str(device), "params": sum(p.numel() for p in model.parameters()),
                          "recon_ssim": round(float(metrics.ssim(recon, x).mean()), 4),
                          "recon_psnr": round(float(metrics.psnr(recon, x).mean()), 2),
                          "codes_used": int(metrics.distinct_codes(counts)), "K": vq["num_codes"]}),
              flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:])
