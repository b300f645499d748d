"""`folder:PATH`: any tree of PNG / JPEG / TIFF / BMP images, unlabelled.

Subject key by file name (see `listing.subject_key`): `<subject>_<n>.ext` groups the numbered
slices of a subject, any other name is a subject of its own. Splits by a seeded hash of the
subject key: test_fraction of the subjects to test, val_fraction to val, the rest to train.
Images of any size are padded to square and resized.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from bench.data import files, listing
from bench.data.base import DataConfig
from bench.data.images import IMAGE_SUFFIXES, decode_image
from bench.data.plan import Kind, Plan


def hash_layout(where: str, root: Path, found: list[listing.Found],
                rejected: list[listing.Problem],
                subject_of: Callable[[Path], str], config: DataConfig) -> files.Layout:
    """A layout whose splits come from a seeded hash of each file's subject key."""
    subjects = [subject_of(f.path) for f in found]
    split_of = files.hash_split(subjects, config)
    sources = [files.Source.of(f, split_of[s], s) for f, s in zip(found, subjects)]
    hint = (f"{len(split_of)} subjects found in {root} are too few for train/val/test "
            f"with test_fraction={config.test_fraction}, val_fraction={config.val_fraction}")
    return replace(files.Layout(where, root, tuple(sources), tuple(rejected)), hint=hint)


def scan(path: Path | None, config: DataConfig) -> files.Layout:
    where = f"folder:{path}"
    root = listing.require_dir(path, where)
    found, rejected = listing.list_files(root, listing.is_image,
                                         f"not an image file ({', '.join(IMAGE_SUFFIXES)})",
                                         recursive=True)
    return hash_layout(where, root, found, rejected, listing.subject_key, config)


def plan(path: Path | None, config: DataConfig) -> Plan:
    return files.plan(scan(path, config), config, decode_image)


KIND = Kind("folder", takes_path=True,
            config_fields=("resolution", "seed", "val_fraction", "test_fraction", "skip_bad"),
            plan=plan)
