"""`oasis:PATH`: the OASIS keras_png_slices_data set.

PATH/keras_png_slices_{train,validate,test}/ hold `case_<NNN>_slice_<S>.nii.png`, 256x256
8-bit grey; subject = case. The keras_png_slices_seg_* folders (segmentations) are part of the
layout and not read. PATH may also be the folder that contains keras_png_slices_data/.

An image named otherwise is an error, or skipped with a note (skip_bad); anything else beside
the split folders is a note.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data import files, listing
from bench.data.base import DataConfig
from bench.data.images import decode_image
from bench.data.plan import Kind, Plan

FOLDERS = {"train": "keras_png_slices_train", "val": "keras_png_slices_validate",
           "test": "keras_png_slices_test"}
NAME = re.compile(r"^(case_\d+)_slice_\d+\.nii\.png$")


def subject_of(path: Path) -> str | None:
    """`case_001_slice_12.nii.png` -> `case_001`; None for a name outside the pattern."""
    match = NAME.match(path.name.lower())
    return match.group(1) if match else None


def scan(path: Path | None, config: DataConfig) -> files.Layout:
    where = f"oasis:{path}"
    given = listing.require_dir(path, where)
    inner = "keras_png_slices_data/" if (given / "keras_png_slices_data").is_dir() else ""
    root = given / "keras_png_slices_data" if inner else given
    listing.require_folders(root, FOLDERS.values(), where, depth=1)
    sources, rejected, misnamed = [], [], []
    for split, folder in FOLDERS.items():
        found, bad = listing.list_files(root / folder, listing.is_image, "not an image file")
        named, odd = listing.by_name(found, subject_of)
        rejected, misnamed = rejected + bad, misnamed + odd
        sources += [files.Source.of(f, split, subject) for f, subject in named]
    strays = listing.outside(given, [inner + f for f in FOLDERS.values()],
                             lambda name: name.startswith(inner + "keras_png_slices_seg"))
    return files.Layout(where, root, tuple(sources), tuple(rejected), tuple(misnamed),
                        "case_<NNN>_slice_<S>.nii.png", one_size=True,
                        notes=files.ignored_note(strays, where),
                        hint=f"expected case_<NNN>_slice_<S>.nii.png files in {root}")


def plan(path: Path | None, config: DataConfig) -> Plan:
    return files.plan(scan(path, config), config, decode_image)


KIND = Kind("oasis", takes_path=True, config_fields=("resolution", "skip_bad"), plan=plan)
