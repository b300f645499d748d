"""`mni`: the embedded default. Seeded augmentations of axial slices of the MNI152 2009a T1
template that nilearn ships in its wheel, so the benchmark runs offline with no download.

Subject key = slice position. Blocks of consecutive slices go to one split each (neighbours
1 mm apart are near duplicates), so no slice, and no (slice, seed) pair, is in two splits.
Every image is a fresh draw of affine + elastic warp, bias field, gamma and Rician noise.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.base import SPLITS, DataConfig, Split
from bench.data.images import axial_view, brain_slices, square_resize
from bench.data.plan import Built, Kind, Plan, Progress
from bench.errors import DataError

@dataclass(frozen=True)
class Augment:
    """Augmentation strengths. Part of the cache key."""

    min_area_fraction: float = 0.5  # central band: slices with >= half the largest brain area
    block: int = 4  # consecutive slices kept in one split
    rotate_deg: float = 8.0  # uniform in +-
    scale: float = 0.08  # zoom uniform in 1 +-
    shift: float = 0.05  # translation uniform in +-, fraction of the half-width
    elastic: float = 0.012  # displacement std, fraction of the half-width
    elastic_grid: int = 5  # control points per side of the smooth displacement field
    bias: float = 0.15  # std of the log multiplicative bias field
    bias_grid: int = 3  # control points per side of the bias field
    log_gamma: float = 0.15  # std of log(gamma)
    noise: float = 0.03  # Rician noise sigma uniform in [0, noise], intensities in [0, 1]
    batch: int = 256  # images per grid_sample call; the random stream depends on it


AUGMENT = Augment()
TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"  # what nilearn loads as MNI152


def template_path() -> Path:
    """The template file inside the installed nilearn wheel, found without importing nilearn
    (its import pulls in scikit-learn and pandas: seconds on a loaded machine)."""
    spec = importlib.util.find_spec("nilearn")
    origin = Path(spec.origin) if spec and spec.origin else None
    path = origin.parent / "datasets" / "data" / TEMPLATE if origin else None
    if path is None or not path.is_file():
        raise DataError(f"mni: the MNI152 template {TEMPLATE} is missing from the nilearn "
                        f"install; reinstall nilearn (pip install 'nilearn>=0.10')")
    return path


def template_slices(resolution: int, augment: Augment = AUGMENT) -> tuple[np.ndarray, np.ndarray]:
    """(z positions (S,), slices (S, R, R) float32 in [0, 1]) of the template's brain band.
    Same voxels as nilearn's load_mni152_template(resolution=1): the file scaled by its max."""
    import nibabel as nib

    volume = np.asarray(nib.load(template_path()).get_fdata(), np.float32)  # RAS, 1 mm
    volume /= volume.max()
    zs = brain_slices(volume, augment.min_area_fraction)
    slices = [square_resize(axial_view(volume, int(z)), resolution) for z in zs]
    return zs, np.clip(np.stack(slices), 0, 1)


def assign_blocks(n_slices: int, sizes: tuple[int, int, int], seed: int,
                  block: int) -> dict[str, np.ndarray]:
    """Slice indices of each split: whole blocks, shares of blocks ~ shares of images, >= 1."""
    n_blocks = -(-n_slices // block)
    total = sum(sizes)
    val = max(1, round(n_blocks * sizes[1] / total))
    test = max(1, round(n_blocks * sizes[2] / total))
    if n_blocks - val - test < 1:
        raise DataError(f"mni: {n_slices} template slices make too few blocks for 3 splits")
    order = np.random.default_rng(seed).permutation(n_blocks)
    chosen = {"train": order[val + test:], "val": order[:val], "test": order[val:val + test]}
    return {name: np.concatenate([np.arange(b * block, min((b + 1) * block, n_slices))
                                  for b in np.sort(blocks)]) for name, blocks in chosen.items()}


def build(config: DataConfig, progress: Progress | None) -> Built:
    from bench.data.mni_augment import generate_split, seeded_generator  # torch, on a miss only

    zs, slices = template_slices(config.resolution)
    allowed = assign_blocks(len(zs), config.mni_sizes, config.seed, AUGMENT.block)
    if progress is not None:
        progress.start("generating mni", sum(config.mni_sizes))
    splits = {}
    try:
        for name, n in zip(SPLITS, config.mni_sizes):
            g = seeded_generator(f"mni:{config.seed}:{name}")
            images, picks = generate_split(slices, allowed[name], n, g, AUGMENT, progress)
            subjects = np.asarray([f"mni_z{int(zs[i]):03d}" for i in picks])
            splits[name] = Split(images, subjects)
    finally:
        if progress is not None:
            progress.stop()
    bands = ", ".join(f"{k} {len(v)}" for k, v in allowed.items())
    note = (f"mni: augmented axial slices z={zs.min()}..{zs.max()} of the MNI152 2009a template "
            f"(slices per split: {bands})")
    return Built(splits, (), (note,))


def plan(path: Path | None, config: DataConfig) -> Plan:
    identity = {"template": TEMPLATE, "nilearn": importlib.metadata.version("nilearn"),
                "augment": dataclasses.asdict(AUGMENT)}
    return Plan(identity, lambda progress: build(config, progress))


KIND = Kind("mni", takes_path=False, config_fields=("resolution", "seed", "mni_sizes"), plan=plan)
