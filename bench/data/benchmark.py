"""Loading speed of a dataset spec, cold (fresh cache) vs warm, for `bench perf`."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.data import load_dataset
from bench.data.base import DataConfig, ImageDataset


def _timed_load(spec: str, config: DataConfig, cache_dir: Path) -> tuple[ImageDataset, float]:
    start = time.perf_counter()
    ds = load_dataset(spec, config, cache_dir=cache_dir)
    return ds, time.perf_counter() - start


def _read_all_s(ds: ImageDataset) -> float:
    """Seconds to touch every pixel of every split (pages the memmaps in)."""
    start = time.perf_counter()
    for split in ds.splits.values():
        np.asarray(split.images).sum(dtype=np.int64)
    return time.perf_counter() - start


def measure_loading(spec: str, config: DataConfig, cache_dir: Path) -> dict:
    """Cold load (decode into a fresh cache folder under cache_dir, removed afterwards), then a
    warm load of the same cache and a full read of its pixels. Times in seconds."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".perf-", dir=cache_dir))
    try:
        ds, cold_s = _timed_load(spec, config, fresh)
        ds, warm_s = _timed_load(spec, config, fresh)
        read_s = _read_all_s(ds)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    n_images = sum(len(split) for split in ds.splits.values())
    return {"spec": spec, "kind": ds.kind, "fingerprint": ds.fingerprint,
            "resolution": config.resolution, "n_images": n_images,
            "cold_s": cold_s, "warm_s": warm_s, "warm_read_s": read_s,
            "cold_images_per_s": n_images / max(cold_s, 1e-9),
            "warm_images_per_s": n_images / max(warm_s + read_s, 1e-9)}
