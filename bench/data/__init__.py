"""Datasets: a spec string -> ImageDataset of uint8 splits, decoded once and cached.

Specs: `mni` (embedded default), `oasis:PATH`, `adni:PATH`, `folder:PATH`, `nifti:PATH`.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data import adni, cache, folder, mni, nifti, oasis
from bench.data.base import RESOLUTIONS, SPLITS, DataConfig, ImageDataset, Split
from bench.data.images import PREPROCESS_VERSION
from bench.data.plan import Built, Kind, Progress
from bench.errors import DataError
from bench.store import Artefact, Store

DATASET_KINDS: dict[str, Kind] = {k.name: k for k in (mni.KIND, oasis.KIND, adni.KIND,
                                                      folder.KIND, nifti.KIND)}

__all__ = ["DATASET_KINDS", "RESOLUTIONS", "SPLITS", "DataConfig", "ImageDataset", "Split",
           "dataset_identity", "display_name", "load_dataset", "parse_spec"]


def _available() -> str:
    return ", ".join(kind.usage for kind in DATASET_KINDS.values())


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """"adni:/data/AD_NC" -> ("adni", Path("/data/AD_NC")); "mni" -> ("mni", None)."""
    name, sep, rest = spec.partition(":")
    kind = DATASET_KINDS.get(name)
    if kind is None:
        raise DataError(f"unknown dataset {name!r}; available: {_available()}")
    if kind.takes_path and not rest:
        raise DataError(f"dataset {name!r} needs a path: {kind.usage}")
    if not kind.takes_path and sep:
        raise DataError(f"dataset {name!r} takes no path, got {spec!r}; use {kind.usage}")
    return name, Path(rest).expanduser() if rest else None


def fingerprint_of(spec: str, config: DataConfig) -> tuple[str, "object"]:
    """(fingerprint, plan) of a spec, without decoding anything."""
    name, path = parse_spec(spec)
    kind = DATASET_KINDS[name]
    plan = kind.plan(path, config)
    key = {"kind": name, "preprocess": PREPROCESS_VERSION, "identity": plan.identity,
           "config": {f: getattr(config, f) for f in kind.config_fields}}
    return cache.fingerprint(key), plan


def load_dataset(spec: str, config: DataConfig, *, cache_dir: Path | None = None,
                 store: Store | None = None, force: bool = False,
                 progress: Progress | None = None) -> ImageDataset:
    """Decode `spec` once into the store (`store`, or one rooted at `cache_dir`) as an artefact
    of kind `data` keyed by its fingerprint; return its verified, memory-mapped splits.

    Two identities: the cache entry is keyed by the sources' paths, sizes and mtimes (a cheap
    check that never reuses a stale decode), while the dataset's `fingerprint`, which every
    later stage and table keys on, is the hash of what was decoded (`cache.content_fingerprint`)
    for datasets read from disk. A copy of the same files elsewhere, or the same folder restored
    with new mtimes, is decoded once more and is then the same dataset: its backbone, runs and
    table rows are found, not rebuilt. `mni` is generated: its plan's identity is its content."""
    if store is None:
        if cache_dir is None:
            raise ValueError("load_dataset needs a store or a cache_dir")
        store = Store(Path(cache_dir))
    fingerprint, plan = fingerprint_of(spec, config)
    art = Artefact.of("data", {"fingerprint": fingerprint}, prefix=f"{parse_spec(spec)[0]}-")

    def load(entry: Path) -> Built:
        built = cache.read(entry)
        if built is None:
            raise DataError(f"cache entry {entry} has no {cache.META}; run the same command "
                            f"again with --force to rebuild it")
        return built

    built, _ = store.get_or_build(art, lambda entry: cache.write(entry, plan.build(progress)),
                                  load, force=force)
    name = parse_spec(spec)[0]
    if DATASET_KINDS[name].takes_path:  # files on disk: named by what was decoded from them
        fingerprint = cache.content_fingerprint(name, store.dir(art))
    return ImageDataset(spec=spec, kind=name, config=config, fingerprint=fingerprint,
                        splits=built.splits, label_names=built.label_names,
                        notes=plan.notes + built.notes)


def display_name(spec: str) -> str:
    """The short name tables show for a spec: "mni", or the last component of its path
    ("adni:../data/AD_NC/" -> "AD_NC"), never a whole path. Takes any spec string, valid or not
    (old records keep theirs); "." and ".." are named after the folder they mean here."""
    kind, _, rest = spec.partition(":")
    if not rest:
        return kind
    path = os.path.normpath(os.path.expanduser(rest))
    name = Path(path).name
    return name if name not in ("", ".", "..") else Path(os.path.abspath(path)).name or path


def dataset_identity(spec: str, fingerprint: str) -> dict[str, str]:
    """What a record says about its data: tables group by kind + fingerprint (one table for
    every spelling of one dataset) and show the name. `fingerprint`: ImageDataset.fingerprint."""
    return {"kind": spec.partition(":")[0], "fingerprint": fingerprint, "name": display_name(spec)}
