"""Tiny on-disk fixtures of every dataset layout (a few subjects, 16..32 px images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data import DataConfig, ImageDataset, load_dataset


def load(spec: str, tmp_path: Path, **overrides) -> ImageDataset:
    """Load a spec at 32 px (DataConfig fields overridden) with its cache under tmp_path."""
    config = DataConfig(**{"resolution": 32, **overrides})
    return load_dataset(spec, config, cache_dir=tmp_path / "cache")


def write_image(path: Path, size: tuple[int, int] = (24, 20), seed: int = 0,
                mode: str = "L") -> Path:
    """A blob on black of (width, height) `size`, saved in the format the suffix names."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    blob = ((xx - w / 2) ** 2 / (w / 3) ** 2 + (yy - h / 2) ** 2 / (h / 3) ** 2) < 1
    x = (blob * rng.integers(120, 250, size=(h, w))).astype(np.uint8)
    if mode == "RGB":
        image = Image.fromarray(np.stack([x, x // 2, x // 3], -1))
    elif mode == "I;16":
        image = Image.fromarray(x.astype(np.uint16) * 16)  # 12-bit values in a 16-bit file
    else:
        image = Image.fromarray(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_adni(root: Path, train: int = 4, test: int = 2, slices: int = 2) -> Path:
    """root/{train,test}/{AD,NC}/<subject>_<slice>.jpeg; subjects numbered apart per folder."""
    for split, n, base in (("train", train, 1000), ("test", test, 5000)):
        for k, label in enumerate(("AD", "NC")):
            for s in range(n):
                subject = base + 100 * k + s
                for i in range(slices):
                    write_image(root / split / label / f"{subject}_{60 + i}.jpeg", seed=subject + i)
    return root


def make_oasis(root: Path, cases: tuple[int, int, int] = (3, 2, 2), slices: int = 2) -> Path:
    """root/keras_png_slices_{train,validate,test}/case_<NNN>_slice_<S>.nii.png + a seg folder."""
    case = 0
    for folder, n in zip(("train", "validate", "test"), cases):
        for _ in range(n):
            case += 1
            for s in range(slices):
                name = f"case_{case:03d}_slice_{s}.nii.png"
                write_image(root / f"keras_png_slices_{folder}" / name, (16, 16), seed=case + s)
                write_image(root / f"keras_png_slices_seg_{folder}" / name, (16, 16), seed=0)
    return root


def make_folder(root: Path, subjects: int = 10, slices: int = 2) -> Path:
    """A nested tree of numbered PNG slices of various sizes."""
    for s in range(subjects):
        for i in range(slices):
            path = root / f"group{s % 2}" / f"sub{s:02d}_{i}.png"
            write_image(path, (20 + 2 * s, 16), seed=s + i)
    return root


def write_volume(path: Path, shape: tuple[int, ...] = (12, 14, 10), seed: int = 0) -> Path:
    """A noisy ellipsoid 'brain' in a NIfTI volume with an identity (RAS) affine."""
    import nibabel as nib

    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij")
    inside = sum(g ** 2 for g in grids) < 0.7
    rng = np.random.default_rng(seed)
    volume = inside * rng.uniform(200, 900, size=shape[:3])
    if len(shape) == 4:
        volume = np.repeat(volume[..., None], shape[3], axis=-1)
    elif len(shape) == 2:
        volume = rng.uniform(0, 900, size=shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
    return path


def make_nifti(root: Path, volumes: int = 8) -> Path:
    for v in range(volumes):
        write_volume(root / f"site{v % 2}" / f"sub{v:02d}.nii.gz", seed=v)
    return root
