"""What `bench data inspect` reports: counts, subjects, intensity statistics and a montage."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.base import SPLITS, ImageDataset, Split, class_counts

PERCENTILES = (1, 5, 50, 95, 99)
MONTAGE_COLUMNS = 8  # images per split in the montage
MONTAGE_GAP = 2  # px between montage tiles


@dataclass(frozen=True)
class SplitSummary:
    name: str
    n_images: int
    n_subjects: int
    per_label: dict[str, int]  # {} when unlabelled
    mean: float  # grey level 0..255 over every pixel of the split
    std: float
    percentiles: dict[int, int]  # PERCENTILES -> grey level


def intensity_stats(images: np.ndarray) -> tuple[float, float, dict[int, int]]:
    """(mean, std, percentiles) of uint8 images, exactly, from their 256-bin histogram."""
    counts = np.zeros(256, np.int64)
    for start in range(0, len(images), 4096):  # chunks keep memory flat on large memmaps
        counts += np.bincount(np.asarray(images[start:start + 4096]).ravel(), minlength=256)
    total = max(int(counts.sum()), 1)
    levels = np.arange(256)
    mean = float((counts * levels).sum() / total)
    std = float(np.sqrt((counts * (levels - mean) ** 2).sum() / total))
    cumulative = np.cumsum(counts) / total
    return mean, std, {p: int(np.searchsorted(cumulative, p / 100)) for p in PERCENTILES}


def summarize_split(name: str, split: Split, label_names: tuple[str, ...]) -> SplitSummary:
    per_label = class_counts(split, label_names)
    mean, std, percentiles = intensity_stats(split.images)
    return SplitSummary(name, len(split), len(set(split.subjects.tolist())), per_label, mean, std,
                        percentiles)


def summarize(ds: ImageDataset) -> list[SplitSummary]:
    return [summarize_split(name, ds.splits[name], ds.label_names) for name in SPLITS]


def montage(ds: ImageDataset, columns: int = MONTAGE_COLUMNS) -> np.ndarray:
    """One row per split of evenly spaced images, on a mid-grey grid. (3R+gaps, cR+gaps) uint8"""
    r, gap = ds.config.resolution, MONTAGE_GAP
    grid = np.full((len(SPLITS) * (r + gap) - gap, columns * (r + gap) - gap), 128, np.uint8)
    for row, name in enumerate(SPLITS):
        images = ds.splits[name].images
        picks = np.linspace(0, len(images) - 1, num=min(columns, len(images))).astype(int)
        for col, i in enumerate(picks):
            top, left = row * (r + gap), col * (r + gap)
            grid[top:top + r, left:left + r] = images[i]
    return grid


def write_png(path: Path, image: np.ndarray) -> Path:
    """Save a uint8 image as PNG atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
