"""`mni`: the embedded default. Synthetic subjects made from the MNI152 2009a T1 template that
nilearn ships in its wheel, so the benchmark runs offline with no download.

A subject is one seeded draw of the whole template volume through a 3-D affine and smooth
deformation, a smooth bias field, gamma and Rician noise, all fixed for that subject; its images
are axial slices at levels spread over the whole brain band (one per equal stratum). Splits are
by subject, like every real dataset, so every split shows the same anatomy levels.
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
    """How a subject is drawn. Part of the cache key."""

    min_area_fraction: float = 0.5  # brain band: axial levels with >= half the largest brain area
    slices_per_subject: int = 10  # images of one subject, one level per equal stratum of the band
    rotate_deg: float = 8.0  # rotation about the axial axis, uniform in +-
    tilt_deg: float = 4.0  # rotations about the two in-plane axes (pitch, roll), uniform in +-
    scale: float = 0.08  # head size: zoom uniform in 1 +-
    aspect: float = 0.04  # head shape: a further zoom per axis, uniform in 1 +-
    shift: float = 0.05  # in-plane translation uniform in +-, fraction of the half-width
    elastic_mm: float = 2.0  # std of the smooth 3-D displacement at every point, mm
    elastic_grid: int = 5  # control points per axis of the displacement field
    bias: float = 0.15  # std of the log multiplicative bias field at every point
    bias_grid: int = 3  # control points per axis of the bias field
    log_gamma: float = 0.15  # std of log(gamma)
    noise: float = 0.03  # Rician noise sigma uniform in [0, noise], intensities in [0, 1]

    def __post_init__(self) -> None:
        for name in ("slices_per_subject", "elastic_grid", "bias_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


AUGMENT = Augment()
GENERATOR_VERSION = 2  # 1: independent per-image draws of slices split in blocks; 2: subjects
TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"  # what nilearn loads as MNI152


@dataclass(frozen=True)
class Template:
    """The template as a stack of preprocessed axial views, with the geometry to reslice it."""

    stack: np.ndarray  # (Z, R, R) float32 in [0, 1]: every axial view, square-resized
    side_mm: float  # in-plane side of the padded square, mm (voxels are 1 mm)
    band: tuple[int, int]  # first and last z of the brain band


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


def template(resolution: int, augment: Augment = AUGMENT) -> Template:
    """Same voxels as nilearn's load_mni152_template(resolution=1): the file scaled by its max,
    each axial view padded to a square and resized like every other dataset's images."""
    import nibabel as nib

    volume = np.asarray(nib.load(template_path()).get_fdata(), np.float32)  # RAS, 1 mm
    volume /= volume.max()
    zs = brain_slices(volume, augment.min_area_fraction)
    stack = [square_resize(axial_view(volume, z), resolution) for z in range(volume.shape[2])]
    return Template(np.clip(np.stack(stack), 0, 1), float(max(volume.shape[:2])),
                    (int(zs.min()), int(zs.max())))


def subject_sizes(n_images: int, per_subject: int) -> list[int]:
    """Images of each subject of a split: as even as possible, so that every subject spans the
    band (24 at 10 per subject: [8, 8, 8], never [10, 10, 4])."""
    n_subjects = -(-n_images // per_subject)
    base, extra = divmod(n_images, n_subjects)
    return [base + 1] * extra + [base] * (n_subjects - extra)


def subject_plan(sizes: tuple[int, int, int], per_subject: int) -> dict[str, list[tuple[str, int]]]:
    """(subject id, images) per split; ids are numbered across splits, so no id is in two."""
    plan, first = {}, 0
    for name, n in zip(SPLITS, sizes):
        counts = subject_sizes(n, per_subject)
        plan[name] = [(f"sub-{first + i:05d}", k) for i, k in enumerate(counts)]
        first += len(counts)
    return plan


def build(config: DataConfig, progress: Progress | None) -> Built:
    from bench.data.mni_augment import render_split  # torch, on a miss only

    volume = template(config.resolution)
    plan = subject_plan(config.mni_sizes, AUGMENT.slices_per_subject)
    if progress is not None:
        progress.start("generating mni", sum(config.mni_sizes))
    splits = {}
    try:
        for name, subjects in plan.items():
            images = render_split(volume, subjects, config.seed, AUGMENT, progress)
            ids = np.repeat([sid for sid, _ in subjects], [k for _, k in subjects])
            splits[name] = Split(images, ids)
    finally:
        if progress is not None:
            progress.stop()
    counts = "/".join(str(len(plan[name])) for name in SPLITS)
    note = (f"mni: {counts} synthetic subjects (train/val/test) of the MNI152 2009a template, "
            f"axial slices spread over z={volume.band[0]}..{volume.band[1]}")
    return Built(splits, (), (note,))


def plan(path: Path | None, config: DataConfig) -> Plan:
    identity = {"template": TEMPLATE, "nilearn": importlib.metadata.version("nilearn"),
                "generator": GENERATOR_VERSION, "augment": dataclasses.asdict(AUGMENT)}
    return Plan(identity, lambda progress: build(config, progress))


KIND = Kind("mni", takes_path=False, config_fields=("resolution", "seed", "mni_sizes"), plan=plan)
