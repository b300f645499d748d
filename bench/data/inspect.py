"""What `bench data inspect` reports: counts, subjects, intensity statistics, subjects stored
twice (twins) and a montage."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.base import SPLITS, ImageDataset, Split, class_counts
from bench.metrics.distribution import sq_dists

PERCENTILES = (1, 5, 50, 95, 99)
TWIN_SIDE = 16  # twins are looked for on slices averaged down to 16x16
TWIN_RMS = 0.01  # RMS grey difference (0-1) under which two subjects count as one scan twice
TWIN_MIN_SLICES = 3  # fewer slices a subject: a blank or look-alike slice would pass as a twin
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


@dataclass(frozen=True)
class Twins:
    """Subjects of one split that look like a training subject stored under another ID: their
    slices, in stored order and averaged to TWIN_SIDE x TWIN_SIDE, differ from that subject's
    by under TWIN_RMS (RMS, grey 0-1). On ADNI AD_NC ordinary pairs differ by 0.03-0.06."""
    split: str
    subjects: int  # all of the split's subjects
    compared: int  # those with the training split's most common slice count (the rest can't be)
    twins: int  # of those, subjects with a twin in train (for train: another training subject)
    slices: int  # the twins' slices
    nearest_median: float  # median RMS to the nearest (other) training subject; nan if none
    nearest_above: float  # the smallest of those RMS at or above the line (how clean the gap is)


def pooled(images: np.ndarray, side: int = TWIN_SIDE) -> np.ndarray:
    """(N, side*side) float32 area means of (N, R, R) uint8 images, R a multiple of side, 0-1."""
    n, r = len(images), images.shape[-1]
    if r % side:
        raise ValueError(f"resolution {r} is not a multiple of {side}")
    out = np.empty((n, side * side), np.float32)
    step = max(1, 2 ** 26 // (4 * r * r))  # 64 MiB of float32 a chunk: flat on large memmaps
    for start in range(0, n, step):
        chunk = np.asarray(images[start:start + step], np.float32) / 255
        k = len(chunk)
        out[start:start + k] = chunk.reshape(k, side, r // side, side, r // side).mean((2, 4)).reshape(k, -1)
    return out


def subject_stacks(split: Split, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """(subject IDs, one row each: its pooled slices in stored order) of the subjects with
    exactly `slices` slices."""
    subjects = np.asarray(split.subjects).astype(str)
    names, inverse, counts = np.unique(subjects, return_inverse=True, return_counts=True)
    keep = np.flatnonzero(counts == slices)
    if not len(keep):
        return names[keep], np.empty((0, slices * TWIN_SIDE ** 2), np.float32)
    order = np.argsort(inverse, kind="stable")  # each subject's slices together, stored order
    rows = pooled(split.images)[order].reshape(-1, TWIN_SIDE ** 2)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return names[keep], np.stack([rows[starts[i]:starts[i] + slices].ravel() for i in keep])


def nearest_rms(queries: np.ndarray, refs: np.ndarray, *,
                exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each row of queries, the RMS difference to its nearest row of refs (float64) and
    that row's index (exclude_self: queries ARE refs, and a row's own distance does not count)."""
    best, index = np.full(len(queries), np.inf), np.zeros(len(queries), np.int64)
    r = refs.astype(np.float64)
    for start in range(0, len(queries), 256):
        d2 = sq_dists(queries[start:start + 256].astype(np.float64), r)
        if exclude_self:
            d2[np.arange(len(d2)), np.arange(start, start + len(d2))] = np.inf
        index[start:start + len(d2)] = d2.argmin(1)
        best[start:start + len(d2)] = d2.min(1)
    return np.sqrt(best / max(queries.shape[1], 1)), index


def common_slice_count(ds: ImageDataset) -> int:
    """The training split's most common number of slices per subject (0: no training data)."""
    train = np.asarray(ds.splits["train"].subjects).astype(str)
    if not len(train):
        return 0
    counts = np.unique(np.unique(train, return_counts=True)[1], return_counts=True)
    return int(counts[0][np.argmax(counts[1])])


def _nearest_training_subjects(ds: ImageDataset) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split: (its compared subject IDs, RMS to the nearest training subject, that
    subject's ID), over the subjects with the training split's most common slice count."""
    slices = common_slice_count(ds)
    if slices < TWIN_MIN_SLICES:
        return {}
    ref_names, refs = subject_stacks(ds.splits["train"], slices)
    out = {}
    for name in SPLITS:
        names, stacks = ((ref_names, refs) if name == "train" else
                         subject_stacks(ds.splits[name], slices))
        if not len(stacks) or len(refs) < (2 if name == "train" else 1):
            out[name] = (names, np.full(len(names), np.inf), np.full(len(names), "", object))
            continue
        rms, index = nearest_rms(stacks, refs, exclude_self=name == "train")
        out[name] = (names, rms, ref_names[index])
    return out


def twin_pairs(ds: ImageDataset, split: str, rms: float = TWIN_RMS) -> list[tuple[str, str, float]]:
    """(subject of `split`, its training twin, their RMS) for every twin of `split`."""
    names, best, match = _nearest_training_subjects(ds).get(split, ((), (), ()))
    return [(str(n), str(m), float(b)) for n, b, m in zip(names, best, match) if b < rms]


def find_twins(ds: ImageDataset, rms: float = TWIN_RMS) -> list[Twins]:
    """Per split, its subjects that match a training subject to within `rms` (see `Twins`);
    [] where it cannot be told (training subjects of fewer than TWIN_MIN_SLICES slices)."""
    out = []
    for name, (names, best, _) in _nearest_training_subjects(ds).items():
        subjects = np.asarray(ds.splits[name].subjects).astype(str)
        slices = int(np.isin(subjects, names[best < rms]).sum())
        twins, above = int((best < rms).sum()), best[np.isfinite(best) & (best >= rms)]
        out.append(Twins(name, len(np.unique(subjects)), len(names), twins, slices,
                         float(np.median(best)) if np.isfinite(best).any() else float("nan"),
                         float(above.min()) if len(above) else float("nan")))
    return out


def twin_notes(twins: list[Twins]) -> list[str]:
    """One line per held-out split with twins in train (scores there can reward copying), and
    one per split with subjects left out of the comparison."""
    notes = [f"{t.split}: {t.twins} of {t.compared} subjects compared ({t.slices} slices) match "
             f"a training subject to RMS < {TWIN_RMS} (near-identical scans under two IDs?); "
             f"{t.split} scores on them can reward a prior that copies training grids"
             for t in twins if t.split != "train" and t.twins]
    return notes + [f"{t.split}: {t.subjects - t.compared} of {t.subjects} subjects not compared "
                    f"for twins (their slice count is not the training split's usual one)"
                    for t in twins if t.compared < t.subjects]


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
