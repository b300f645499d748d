"""Opt-in checks on a real ADNI AD_NC folder: `VQB_ADNI=/path/to/AD_NC python -m pytest -m adni`.

Skipped unless VQB_ADNI names a folder; never needed in CI or a clean clone.
"""

import os
from pathlib import Path

import pytest

from bench.data import DataConfig, load_dataset

ROOT = os.environ.get("VQB_ADNI")
pytestmark = [pytest.mark.adni,
              pytest.mark.skipif(not ROOT, reason="set VQB_ADNI=PATH to an AD_NC folder")]


def files_on_disk(root: Path, split: str) -> dict[str, int]:
    return {label: sum(1 for p in (root / split / label).iterdir() if p.suffix == ".jpeg")
            for label in ("AD", "NC")}


def test_counts_and_subjects_match_the_files(tmp_path):
    root = Path(ROOT)
    ds = load_dataset(f"adni:{root}", DataConfig(resolution=64), cache_dir=tmp_path)
    train_files, test_files = files_on_disk(root, "train"), files_on_disk(root, "test")
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == sum(train_files.values())
    assert len(ds.splits["test"]) == sum(test_files.values())
    for split, expected in (("test", test_files),):
        labels = ds.splits[split].labels
        for c, name in enumerate(ds.label_names):
            assert int((labels == c).sum()) == expected[name]
    subjects = {s: set(ds.splits[s].subjects.tolist()) for s in ("train", "val", "test")}
    assert not (subjects["train"] & subjects["val"]) and not (subjects["train"] & subjects["test"])
    assert not (subjects["val"] & subjects["test"])
    assert ds.splits["train"].images.shape[1:] == (64, 64)
