"""`adni:PATH`: the ADNI AD_NC slice set.

PATH/train/{AD,NC}/ and PATH/test/{AD,NC}/ hold `<subject>_<slice>.jpeg`, 256 wide x 240 high,
8-bit grey. Labels AD / NC are kept. Val is a seeded `val_fraction` of the train subjects,
carved per label so both classes are in it.

The subject comes from the name only, so a name outside the pattern (`<subject>_<slice>` or
`<subject>_slice_<slice>`, any image suffix) is an error, or skipped with a note (skip_bad):
guessing would let one subject's slices land in two splits. Empty class folders and entries
outside the four class folders are notes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.data import files, listing
from bench.data.base import DataConfig
from bench.data.images import decode_image
from bench.data.plan import Kind, Plan

LABELS = ("AD", "NC")
FOLDERS = tuple(f"{split}/{label}" for split in ("train", "test") for label in LABELS)
PATTERN = "<subject>_<slice>.jpeg"


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
    root = listing.require_dir(path, where)
    listing.require_folders(root, FOLDERS, where, depth=2)
    sources, rejected, misnamed, notes = [], [], [], []
    for folder in FOLDERS:
        split, label = folder.split("/")
        found, bad = listing.list_files(root / folder, listing.is_image, "not an image file")
        named, odd = listing.by_name(found, listing.numbered_subject)
        rejected, misnamed = rejected + bad, misnamed + odd
        sources += [files.Source.of(f, split, subject, LABELS.index(label))
                    for f, subject in named]
        if not found:
            notes.append(f"{where}: class folder {folder} holds no images")
    notes += files.ignored_note(listing.outside(root, FOLDERS, lambda name: False), where)
    return files.Layout(where, root, tuple(carve_val(sources, config)), tuple(rejected),
                        tuple(misnamed), PATTERN, LABELS, one_size=True, notes=tuple(notes),
                        hint=f"expected images in {root}/train/{{AD,NC}} and {root}/test/{{AD,NC}}")


def plan(path: Path | None, config: DataConfig) -> Plan:
    return files.plan(scan(path, config), config, decode_image)


KIND = Kind("adni", takes_path=True,
            config_fields=("resolution", "seed", "val_fraction", "skip_bad"), plan=plan)
