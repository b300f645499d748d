"""Feature extractors for FD / KID / precision / recall: `build_extractor(name, ...)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.errors import ArtefactError, BenchError
from bench.extractors.base import FeatureExtractor
from bench.store import Store

EXTRACTORS = ("mri", "inception")


def check_extractor(name: str, weights_path: Path | None = None) -> None:
    """Refuse an extractor that cannot run here (unknown, or its optional extra missing) before
    any training happens."""
    match name:
        case "mri":
            return
        case "inception":
            from bench.extractors.inception import _import_inception, resolve_weights
            _import_inception()
            resolve_weights(weights_path)
            return
    raise BenchError(f"unknown extractor {name!r}; available: {', '.join(EXTRACTORS)}")


def build_extractor(name: str, *, train_images: np.ndarray, device: torch.device, seed: int,
                    store: Store | None = None, cache_dir: Path | None = None,
                    preset: str = "quick", progress=None, weights_path: Path | None = None,
                    force: bool = False) -> FeatureExtractor:
    """A frozen extractor. `mri` trains (or loads from the store: `store`, or one rooted at
    `cache_dir`) on train_images; `inception` needs torch-fidelity and its weights
    (weights_path or the torch hub cache)."""
    check_extractor(name, weights_path if name == "inception" else None)
    match name:
        case "mri":
            from bench.extractors.mri import build_mri
            if store is None:
                if cache_dir is None:
                    raise ValueError("build_extractor('mri') needs a store or a cache_dir")
                store = Store(Path(cache_dir))
            return build_mri(train_images=train_images, store=store, device=device, seed=seed,
                             preset=preset, progress=progress, force=force)
    from bench.extractors.inception import build_inception
    return build_inception(device=device, weights_path=weights_path)


def stored_extractor(name: str, extractor_id: str, *, store: Store, device: torch.device,
                     weights_path: Path | None = None) -> FeatureExtractor:
    """The frozen extractor a record names (`name`, `extractor_id`), never retrained: `mri`
    from the store, `inception` from its weights file, whose hash must give the same id."""
    check_extractor(name, weights_path if name == "inception" else None)
    match name:
        case "mri":
            from bench.extractors.mri import find_stored_mri
            found = find_stored_mri(store, extractor_id, device)
        case _:
            from bench.extractors.inception import build_inception
            found = build_inception(device=device, weights_path=weights_path)
            found = found if found.id == extractor_id else None
    if found is None:
        where = store.root / "extractors" if name == "mri" else "the weights file given"
        raise ArtefactError(f"the {name} feature extractor {extractor_id} that scored the run is "
                            f"not in {where}; scores with other features would not compare")
    return found


__all__ = ["EXTRACTORS", "FeatureExtractor", "build_extractor", "check_extractor",
           "stored_extractor"]
