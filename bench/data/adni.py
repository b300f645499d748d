"""`adni:PATH`: the ADNI AD_NC slice set.

PATH/train/{AD,NC}/ and PATH/test/{AD,NC}/ hold `<subject>_<slice>.jpeg`, 256 wide x 240 high,
8-bit grey. Labels AD / NC are kept. Val is a seeded `val_fraction` of the train subjects,
carved per label so both classes are in it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.data import files
from bench.data.base import DataConfig
from bench.data.images import decode_image
from bench.data.plan import Kind, Plan

LABELS = ("AD", "NC")
FOLDERS = tuple(f"{split}/{label}" for split in ("train", "test") for label in LABELS)


def carve_val(sources: list[files.Source], config: DataConfig) -> list[files.Source]:
    """Move a seeded val_fraction of each label's train subjects to val."""
    val: set[str] = set()
    for label in range(len(LABELS)):
        order = files.ranked((s.subject for s in sources
                              if s.split == "train" and s.label == label), config.seed)
        val |= set(order[:files.share(len(order), config.val_fraction)])
    return [replace(s, split="val") if s.split == "train" and s.subject in val else s
            for s in sources]


def scan(path: Path | None, config: DataConfig) -> files.Layout:
    where = f"adni:{path}"
    root = files.require_dir(path, where)
    extra = files.require_folders(root, FOLDERS, where, depth=2)
    sources, rejected = [], []
    for folder in FOLDERS:
        split, label = folder.split("/")
        found, bad = files.list_files(root / folder, files.is_image, "not an image file")
        rejected += bad
        sources += [files.Source.of(f, split, files.subject_key(f.path), LABELS.index(label))
                    for f in found]
    notes = (f"{where}: ignored folders {', '.join(extra)}",) if extra else ()
    return files.Layout(where, root, tuple(carve_val(sources, config)), tuple(rejected),
                        LABELS, one_size=True, notes=notes,
                        hint=f"expected images in {root}/train/{{AD,NC}} and {root}/test/{{AD,NC}}")


def plan(path: Path | None, config: DataConfig) -> Plan:
    return files.plan(scan(path, config), config, decode_image)


KIND = Kind("adni", takes_path=True,
            config_fields=("resolution", "seed", "val_fraction", "skip_bad"), plan=plan)
