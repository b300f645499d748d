"""`nifti:PATH`: a tree of 3-D brain volumes (.nii / .nii.gz), one subject per volume.

Each volume is turned to RAS, normalised by its own percentiles (robust to a few hot voxels)
and cut into the axial slices that contain brain. Splits by a seeded hash of the subject key
(the file name without .nii / .nii.gz), like `folder:`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data import files, listing
from bench.data.base import DataConfig
from bench.data.folder import hash_layout
from bench.data.images import Decoded, axial_view, brain_slices, square_resize, to_uint8
from bench.data.plan import Kind, Plan

SUFFIXES = (".nii", ".nii.gz")
PERCENTILES = (0.5, 99.5)  # of the nonzero voxels: the range mapped to [0, 1]
MIN_AREA_FRACTION = 0.25  # keep axial slices with >= this share of the largest brain area


def subject_of(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".gz") else path.stem


def normalise(volume: np.ndarray) -> np.ndarray:
    """Robust [0, 1] scaling by percentiles of the nonzero voxels (all voxels if none are)."""
    volume = np.nan_to_num(volume.astype(np.float32, copy=False))
    inside = volume[volume != 0]
    lo, hi = np.percentile(inside if inside.size else volume, PERCENTILES)
    if hi <= lo:
        raise ValueError(f"constant volume (all voxels {lo:g})")
    return np.clip((volume - lo) / (hi - lo), 0, 1)


def decode_volume(path: Path, resolution: int) -> Decoded:
    """The brain slices of one volume. Raises ValueError on a 2-D or 4-D (or 1-D) volume."""
    import nibabel as nib

    img = nib.load(path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:  # a 3-D volume stored with one time point
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise ValueError(f"{len(shape)}-D volume of shape {shape}; expected a 3-D volume")
    volume = normalise(np.asarray(nib.as_closest_canonical(img).dataobj))
    slices = [to_uint8(square_resize(axial_view(volume, int(z)), resolution))
              for z in brain_slices(volume, MIN_AREA_FRACTION)]
    return Decoded(np.stack(slices), tuple(int(n) for n in shape))


def scan(path: Path | None, config: DataConfig) -> files.Layout:
    where = f"nifti:{path}"
    root = listing.require_dir(path, where)
    found, rejected = listing.list_files(root, lambda name: name.endswith(SUFFIXES),
                                         "not a NIfTI file (.nii, .nii.gz)", recursive=True)
    return hash_layout(where, root, found, rejected, subject_of, config)


def plan(path: Path | None, config: DataConfig) -> Plan:
    return files.plan(scan(path, config), config, decode_volume)


KIND = Kind("nifti", takes_path=True,
            config_fields=("resolution", "seed", "val_fraction", "test_fraction", "skip_bad"),
            plan=plan)
