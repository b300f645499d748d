"""`oasis:PATH`: the OASIS keras_png_slices_data set.

PATH/keras_png_slices_{train,validate,test}/ hold `case_<NNN>_slice_<S>.nii.png`, 256x256
8-bit grey; subject = case. The keras_png_slices_seg_* folders (segmentations) are ignored.
PATH may also be the folder that contains keras_png_slices_data/.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.data import files
from bench.data.base import DataConfig
from bench.data.images import decode_image
from bench.data.plan import Kind, Plan

FOLDERS = {"train": "keras_png_slices_train", "val": "keras_png_slices_validate",
           "test": "keras_png_slices_test"}
NAME = re.compile(r"^(case_\d+)_slice_\d+\.nii\.png$")


def scan(path: Path | None, config: DataConfig) -> files.Layout:
    where = f"oasis:{path}"
    root = files.require_dir(path, where)
    if (root / "keras_png_slices_data").is_dir():
        root = root / "keras_png_slices_data"
    extra = files.require_folders(root, FOLDERS.values(), where, depth=1)
    sources, rejected = [], []
    for split, folder in FOLDERS.items():
        found, bad = files.list_files(root / folder, lambda name: bool(NAME.match(name)),
                                      "name is not case_<NNN>_slice_<S>.nii.png")
        rejected += bad
        sources += [files.Source.of(f, split, NAME.match(f.path.name.lower()).group(1))
                    for f in found]
    ignored = [e for e in extra if not e.startswith("keras_png_slices_seg")]
    notes = (f"{where}: ignored folders {', '.join(ignored)}",) if ignored else ()
    return files.Layout(where, root, tuple(sources), tuple(rejected), one_size=True, notes=notes,
                        hint=f"expected case_<NNN>_slice_<S>.nii.png files in {root}")


def plan(path: Path | None, config: DataConfig) -> Plan:
    return files.plan(scan(path, config), config, decode_image)


KIND = Kind("oasis", takes_path=True, config_fields=("resolution", "skip_bad"), plan=plan)
