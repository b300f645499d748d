"""How close each held-out split sits to the training split, per subject: for the slices of
N subjects of val and of test, the nearest training slice by SSIM (exact search over the whole
train split). A held-out subject whose slices all find their nearest neighbours in ONE training
subject, at SSIM far above other subjects', is most likely the same person under another ID
(another scan or visit). Reads (or decodes) the dataset into CACHE_DIR; writes nothing else.

    python scripts/split_proximity.py CACHE_DIR SPEC PRESET N_SUBJECTS

Example: python scripts/split_proximity.py results/.cache adni:../shared/data/adni/AD_NC quick 25
"""
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench.data import DataConfig, load_dataset
from bench.metrics.nearest import nearest_ssim
from bench.presets import get_preset
from vqvae.train import to_float

CPU = torch.device("cpu")
NEAR = 0.95  # nearest-train SSIM at or above which a slice counts as a near-copy


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__.split("\n\n")[1])
    cache_dir, spec, preset_name, n_subjects = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    preset = get_preset(preset_name)
    ds = load_dataset(spec, DataConfig(resolution=preset.resolution, seed=0,
                                       mni_sizes=preset.mni_sizes), cache_dir=Path(cache_dir))
    train = ds.splits["train"]
    refs = to_float(np.asarray(train.images), CPU)
    train_subjects = np.asarray(train.subjects).astype(str)
    rng = np.random.default_rng(0)
    table = Table(title=f"{spec} · {preset.resolution} px · nearest training slice of "
                        f"{n_subjects} subjects per split (train: {len(refs)} slices of "
                        f"{len(set(train_subjects))} subjects)")
    for col in ("split", "slices", "nearest-train SSIM median", "p5", "p95",
                "slices whose nearest is in the subject's modal match", "subjects with >= 75% there",
                "median SSIM, modal match / other", f"slices >= {NEAR}", "their subjects",
                "training subjects they match"):
        table.add_column(col)
    for name in ("val", "test"):
        split = ds.splits[name]
        subjects = np.asarray(split.subjects).astype(str)
        chosen = rng.choice(np.unique(subjects), min(n_subjects, len(np.unique(subjects))),
                            replace=False)
        idx = np.flatnonzero(np.isin(subjects, chosen))
        found = nearest_ssim(to_float(np.asarray(split.images)[idx], CPU), refs)
        values, match = found.values.numpy(), train_subjects[found.index.numpy()]
        in_modal, consistent, modal_ssim, other_ssim = 0, 0, [], []
        for s in chosen:
            mine = subjects[idx] == s
            top, count = Counter(match[mine]).most_common(1)[0]
            in_modal += count
            consistent += count >= 0.75 * mine.sum()
            modal_ssim += list(values[mine][match[mine] == top])
            other_ssim += list(values[mine][match[mine] != top])
        near = values >= NEAR
        p5, p50, p95 = np.percentile(values, [5, 50, 95])
        table.add_row(name, str(len(idx)), f"{p50:.3f}", f"{p5:.3f}", f"{p95:.3f}",
                      f"{in_modal / len(idx):.0%}", f"{consistent} of {len(chosen)}",
                      f"{np.median(modal_ssim):.3f} / "
                      f"{np.median(other_ssim) if other_ssim else float('nan'):.3f}",
                      f"{near.sum()}", f"{len(set(subjects[idx][near]))}", f"{len(set(match[near]))}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
