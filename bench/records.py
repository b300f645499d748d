"""Run records on disk: one folder per run with record.json (+ weights and sampled codes).

Folders are written to a staging folder and renamed into place, so a record is either whole or
absent. A finished record is never replaced unless `force` is given.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import bench
from bench.errors import ArtefactError
from vqvae.io import commit_dir, load_tensors, save_tensors_atomic, staging_dir, write_json_atomic

RECORD = "record.json"
TENSORS = "artefacts.safetensors"


def exists(directory: Path) -> bool:
    return (directory / RECORD).is_file()


def read(directory: Path) -> dict[str, Any]:
    try:
        record = json.loads((directory / RECORD).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtefactError(f"unreadable run record {directory / RECORD}: {e}") from None
    record["path"] = str(directory)
    return record


def read_tensors(directory: Path) -> dict[str, Tensor]:
    return load_tensors(directory / TENSORS)


def write(directory: Path, record: dict[str, Any], *, tensors: dict[str, Tensor] | None = None,
          force: bool = False) -> None:
    if exists(directory) and not force:
        raise ArtefactError(f"a finished run exists at {directory}; use --force to overwrite it")
    tmp = staging_dir(directory)
    if tensors:
        save_tensors_atomic(tmp / TENSORS, tensors)
    write_json_atomic(tmp / RECORD, record)
    commit_dir(tmp, directory)


def collect(out: Path) -> list[dict[str, Any]]:
    """Every finished record under `out/runs`, oldest first."""
    runs = out / "runs"
    if not runs.is_dir():
        return []
    return [read(p.parent) for p in sorted(runs.glob(f"*/{RECORD}"), key=lambda p: p.stat().st_mtime)]


def versions() -> dict[str, str]:
    return {"bench": bench.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
