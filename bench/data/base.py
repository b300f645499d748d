"""The dataset contract: what every `--dataset` spec turns into.

Images are decoded once into a uint8 cache and handed out memory-mapped. Splits are by subject:
no subject appears in two splits, for every spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
RESOLUTIONS = (32, 64, 128, 256)


@dataclass(frozen=True)
class DataConfig:
    """How a spec is turned into arrays. Part of the cache key."""

    resolution: int = 64  # px, square side after pad-to-square + resize
    seed: int = 0  # seeds augmentation (mni) and subject-level split carving
    val_fraction: float = 0.1  # share of train subjects carved out as val (adni, folder, nifti)
    test_fraction: float = 0.2  # share of subjects held out as test where the layout has none
    mni_sizes: tuple[int, int, int] = (2000, 250, 500)  # (train, val, test) images for `mni`
    skip_bad: bool = False  # skip unusable or misnamed files with a note naming them, not fail

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if len(self.mni_sizes) != 3 or min(self.mni_sizes) < 1:
            raise ValueError(f"mni_sizes must be three positive counts, got {self.mni_sizes}")


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W) uint8, usually a read-only memmap of the cache
    subjects: np.ndarray  # (N,) str: the subject key of each image
    labels: np.ndarray | None = None  # (N,) int64 index into ImageDataset.label_names

    def __len__(self) -> int:
        return int(self.images.shape[0])


def class_counts(split: Split, label_names: tuple[str, ...]) -> dict[str, int]:
    """Images per class of a split, every class named (0 when it has none); {} unlabelled."""
    if split.labels is None:
        return {}
    counts = np.bincount(np.asarray(split.labels, np.int64), minlength=len(label_names))
    return {name: int(counts[c]) for c, name in enumerate(label_names)}


@dataclass(frozen=True)
class ImageDataset:
    spec: str  # as given, e.g. "adni:/data/AD_NC"
    kind: str  # "mni", "oasis", "adni", "folder", "nifti"
    config: DataConfig
    fingerprint: str  # hex hash of the decoded content (datasets on disk; see load_dataset) or
    # of the generator's constants + preprocessing + config (mni)
    splits: dict[str, Split]
    label_names: tuple[str, ...] = ()  # () when unlabelled
    notes: tuple[str, ...] = field(default=())  # said once: conversions, skipped files

    def class_counts(self, split: str) -> dict[str, int]:
        """{class name: images} of one split, e.g. {"AD": 0, "NC": 812}; {} when unlabelled."""
        if split not in self.splits:
            raise ValueError(f"split must be one of {', '.join(self.splits)}, got {split!r}")
        return class_counts(self.splits[split], self.label_names)
