"""Subjects that appear twice under different IDs: every subject's slices, each averaged down
to 16x16 and stacked in slice order, compared with every training subject's (RMS pixel
difference on the 0-1 scale). Ordinary pairs of subjects differ by 0.03-0.06; a twin, the same
scan stored under another subject ID, by under 0.01. Reads (or decodes) the dataset into
CACHE_DIR; prints counts, never IDs or images.

    python scripts/subject_twins.py CACHE_DIR SPEC PRESET [RMS_LINE]

Example: python scripts/subject_twins.py results/.cache adni:../shared/data/adni/AD_NC quick
"""
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data import DataConfig, load_dataset
from bench.presets import get_preset


def subject_vectors(images: np.ndarray, subjects: np.ndarray) -> tuple[list[str], torch.Tensor]:
    """(subject IDs, one row per subject: its slices at 16x16, in order), subjects with the
    most common slice count only."""
    x = torch.from_numpy(np.array(images, dtype=np.float32))[:, None] / 255
    x = F.adaptive_avg_pool2d(x, 16).flatten(1)
    subjects = subjects.astype(str)
    names = list(dict.fromkeys(subjects))
    count = Counter(subjects)
    slices = count.most_common(1)[0][1]
    names = [n for n in names if count[n] == slices]
    return names, torch.stack([x[torch.from_numpy(subjects == n)].flatten() for n in names])


def main() -> None:
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.split("\n\n")[1])
    cache_dir, spec, preset_name = sys.argv[1:4]
    line = float(sys.argv[4]) if len(sys.argv) == 5 else 0.01
    preset = get_preset(preset_name)
    ds = load_dataset(spec, DataConfig(resolution=preset.resolution, seed=0,
                                       mni_sizes=preset.mni_sizes), cache_dir=Path(cache_dir))
    vectors = {name: subject_vectors(np.asarray(split.images), np.asarray(split.subjects))
               for name, split in ds.splits.items()}
    train_names, train = vectors["train"]
    for name, (names, v) in vectors.items():
        d = torch.cdist(v.double(), train.double()) / v.shape[1] ** 0.5
        if name == "train":
            d.fill_diagonal_(float("inf"))
        best = d.min(1).values
        q1, q5, q50 = torch.quantile(best, torch.tensor([0.01, 0.05, 0.5], dtype=best.dtype))
        twins = int((best < line).sum())
        gap = best[best >= line].min() if (best >= line).any() else float("nan")
        print(f"{name}: {len(names)} subjects; RMS to the nearest other training subject: 1% "
              f"{q1:.4f}, 5% {q5:.4f}, median {q50:.4f}; under {line}: {twins} subjects "
              f"({twins / len(names):.1%}, {twins * v.shape[1] // 256} slices); the nearest "
              f"above the line: {gap:.4f}")


if __name__ == "__main__":
    main()
