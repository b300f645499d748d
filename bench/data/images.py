"""Decoding and the preprocessing every kind shares: grey, pad to square, resize, uint8.

Changing anything here changes what the cache holds: bump PREPROCESS_VERSION.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PREPROCESS_VERSION = 1  # part of every cache fingerprint
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass(frozen=True)
class Decoded:
    """What one source file turned into."""

    images: np.ndarray  # (n, R, R) uint8; n = 1 for an image file, slices for a volume
    size: tuple[int, ...]  # as stored before preprocessing: (width, height) of an image
    conversion: str = ""  # "" or what was converted to 8-bit grey, e.g. "RGB -> grey"


def square_resize(x: np.ndarray, resolution: int) -> np.ndarray:
    """(H, W) float in [0, 1] -> (R, R) float32: zero-pad to a centred square, never stretch,
    then an antialiased (Lanczos) resize."""
    h, w = x.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = x
    if side == resolution:
        return square
    resized = Image.fromarray(square).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (any shape) -> uint8, rounded and clipped (Lanczos rings past the range)."""
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def grey_float(im: Image.Image) -> tuple[np.ndarray, str]:
    """A PIL image -> ((H, W) float32 in [0, 1], conversion said in notes or "")."""
    if im.mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0, ""
    if im.mode in _HIGH_DEPTH_MODES:
        # 16-bit scans often use 12 bits: scaling by the type's range would leave them dark
        x = np.asarray(im, dtype=np.float32)
        x = x - min(float(x.min()), 0.0)
        top = float(x.max())
        return (x / top if top > 0 else x), f"{im.mode} -> 8-bit (scaled by each image's maximum)"
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0, f"{im.mode} -> grey"


def decode_image(path: Path, resolution: int) -> Decoded:
    """Read one 2-D image file. Raises (OSError, ValueError, ...) on a truncated or corrupt file."""
    with Image.open(path) as im:
        im.load()  # truncated files raise here, not later
        x, conversion = grey_float(im)
        size = im.size
    return Decoded(to_uint8(square_resize(x, resolution))[None], size, conversion)


def axial_view(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial slice z of a RAS-oriented (X, Y, Z) volume as a radiological view: anterior (nose)
    at the top, the subject's right on the image's left."""
    return np.ascontiguousarray(volume[:, :, z].T[::-1, ::-1])


def brain_slices(volume: np.ndarray, min_area_fraction: float) -> np.ndarray:
    """Indices z of the axial slices whose foreground (> 10 % of the volume's maximum) covers at
    least `min_area_fraction` of the largest slice's foreground."""
    foreground = volume > 0.1 * float(volume.max())
    area = foreground.sum(axis=(0, 1))  # (Z,)
    return np.flatnonzero(area >= min_area_fraction * max(int(area.max()), 1))
