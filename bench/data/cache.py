"""The uint8 cache: one .npy per split plus meta.json, an artefact of kind `data` in the store.

The store stages, verifies and commits the folder; arrays come back memory-mapped read-only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bench.data.base import SPLITS, Split
from bench.data.plan import Built
from bench.errors import DataError
from bench.store import MANIFEST

META = "meta.json"


def fingerprint(key: object) -> str:
    """Hex hash of a JSON-able key (sources, preprocessing version, config fields)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def content_fingerprint(kind: str, entry: Path) -> str:
    """Hex hash of a finished cache entry's content: the kind, the sha256 of each split's array
    (from the entry's manifest, written by the store), the subjects and labels of every image and
    the class names. Not the notes (they name the folder) nor anything of the source files."""
    manifest = json.loads((entry / MANIFEST).read_text())
    meta = json.loads((entry / META).read_text())
    return fingerprint({"kind": kind, "content": 1,
                        "arrays": {name: manifest["files"][f"{name}.npy"] for name in SPLITS},
                        "splits": meta["splits"], "label_names": meta["label_names"]})


def _split_meta(split: Split) -> dict:
    labels = None if split.labels is None else [int(v) for v in split.labels]
    return {"n": len(split), "subjects": [str(s) for s in split.subjects], "labels": labels}


def write(entry: Path, built: Built) -> None:
    """Write `built` into the folder `entry` (the store's staging folder: it commits it)."""
    entry.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        np.save(entry / f"{name}.npy", np.ascontiguousarray(built.splits[name].images))
    meta = {"label_names": list(built.label_names), "notes": list(built.notes),
            "splits": {name: _split_meta(built.splits[name]) for name in SPLITS}}
    (entry / META).write_text(json.dumps(meta))


def read(entry: Path) -> Built | None:
    """The cache entry as memory-mapped splits, or None when there is none."""
    try:
        meta = json.loads((entry / META).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(f"cache entry {entry} is damaged ({e}); run the same command again "
                        f"with --force to rebuild it") from None
    splits = {}
    for name in SPLITS:
        info = meta["splits"][name]
        try:
            images = np.load(entry / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"cache entry {entry} is damaged ({e}); run the same command again "
                        f"with --force to rebuild it") from None
        labels = None if info["labels"] is None else np.asarray(info["labels"], np.int64)
        splits[name] = Split(images, np.asarray(info["subjects"], dtype=str), labels)
    return Built(splits, tuple(meta["label_names"]), tuple(meta["notes"]))
