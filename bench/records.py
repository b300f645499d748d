"""Run records: one artefact folder per run under `runs/` (record.json + samples; a
prior's weights are in the fit artefact its record names, `artefacts.fit`).

Records are written through the store (staging, manifest, rename), so a record is either whole
or absent, and readers never see an unfinished one. A record whose content is not a record
(valid JSON of the wrong shape, a record of an older layout) is skipped by `collect` with a
warning naming it; it never ends up in a table.

Carried records (`records/<run_id>.json` beside `runs/`) are plain record files copied from
other results folders by `bench compare --from`, without samples or weights: tables from runs
made on machines (or in sessions) that share no disk. A run in the folder's own store wins over
a carried copy of the same run.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

import bench
from bench.errors import ArtefactError
from bench.store import Store, load_tensors, save_tensors, write_text_atomic

RECORD = "record.json"
CARRIED = "records"  # plain record files carried in from other results folders
TENSORS = "artefacts.safetensors"
# field -> type every record must have for compare / report to use it
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "kind": str, "prior": str, "dataset": str, "preset": str, "seed": int, "run_id": str,
    "backbone_hash": str, "export_hash": str, "extractor": dict, "scores": dict,
}


def invalid_reason(record: Any) -> str | None:
    """Why `record` is not a usable run record, or None when it is."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for name, kind in REQUIRED.items():
        if name not in record:
            return f"no {name!r} field"
        if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
            return f"field {name!r} is {type(record[name]).__name__}"
    bad = [k for k, v in record["scores"].items()
           if v is not None and not isinstance(v, (int, float))]
    if bad:
        return f"non-numeric scores {bad[:3]}"
    if not isinstance(record["extractor"].get("name"), str):
        return "no extractor name"
    return None


def read(directory: Path) -> dict[str, Any]:
    """A record (verified by the caller through the store); ArtefactError if it is not one."""
    path = directory / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtefactError(f"unreadable run record {path}: {e}") from None
    reason = invalid_reason(record)
    if reason:
        raise ArtefactError(f"{path} is not a run record ({reason})")
    record["path"] = str(directory)
    return record


def read_tensors(directory: Path) -> dict[str, Tensor]:
    return load_tensors(directory / TENSORS)


def writer(record: dict[str, Any], tensors: dict[str, Tensor] | None = None
           ) -> Callable[[Path], None]:
    """A store `build` callback that writes `record` (and its tensors) into a staging folder."""
    reason = invalid_reason(record)
    assert reason is None, f"refusing to write an invalid record: {reason}"

    def build(staging: Path) -> None:
        if tensors:
            save_tensors(staging / TENSORS, tensors)
        (staging / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    return build


def collect(out: Path, warn: Callable[[str], None] = lambda _: None, *,
            carried: bool = True) -> list[dict[str, Any]]:
    """Every finished, verified record under `out/runs`, oldest first, then (with `carried`)
    the carried records of runs not in the store, by run id; the rest are skipped with a
    warning naming them (unfinished builds are never listed at all)."""
    store = Store(out)
    found = []
    for directory in store.finished("runs"):
        try:
            store.verify_dir(directory)
            record = read(directory)
        except ArtefactError as e:
            warn(f"skipping {directory}: {e}")
            continue
        found.append((directory.stat().st_mtime, record))
    legacy = [p for p in (out / "runs").glob("*") if p.is_dir() and not p.name.startswith(".")
              and (p / RECORD).is_file() and not (p / "MANIFEST.json").is_file()]
    for p in legacy:
        warn(f"skipping {p}: written by an older version of bench (no manifest); re-run it")
    own = [r for _, r in sorted(found, key=lambda t: t[0])]
    if not carried:
        return own
    have = {r["run_id"] for r in own}
    return own + [r for r in read_carried(out, warn) if r["run_id"] not in have]


def read_carried(out: Path, warn: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """The valid records under `out/records`, by run id; others skipped with a warning."""
    found = []
    for path in sorted((out / CARRIED).glob("*.json")):
        record, reason = _carried(path)
        if reason:
            warn(f"skipping {path}: {reason}")
        else:
            found.append(record)
    return found


def read_carried_file(path: Path) -> dict[str, Any] | None:
    """The record in one carried file, or None when it holds none."""
    return _carried(path)[0]


def _carried(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"unreadable ({e})"
    reason = invalid_reason(record)
    if reason is None and path.stem != record["run_id"]:
        reason = f"its run id is {record['run_id']!r}, not the file's name"
    return (None, f"not a run record ({reason})") if reason else (record, None)


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a carried record's file name


def portable(record: dict[str, Any]) -> dict[str, Any]:
    """A record as carried: without its local folder (`path`), the dataset named by kind and
    name instead of the spec as typed (which may hold a path of this machine; tables group by
    `data`, not the spec), and a re-scored record's source run by id, not by folder."""
    plain = {k: v for k, v in record.items() if k != "path"}
    data = plain.get("data")
    if isinstance(data, dict) and {"kind", "name"} <= data.keys():
        plain["dataset"] = f"{data['kind']}:{data['name']}"
    against = plain.get("against")
    if isinstance(against, dict):
        against = {k: v for k, v in against.items() if k != "run"}
        source = against.get("data")
        if isinstance(source, dict) and {"kind", "name"} <= source.keys():
            against["dataset"] = f"{source['kind']}:{source['name']}"
        plain["against"] = against
    return plain


def carry(recs: list[dict[str, Any]], out: Path, *, force: bool = False,
          warn: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write each record as `out/records/<run_id>.json` (atomically, `portable`); one already
    there with other content (or unreadable) is kept and named in a warning unless `force`; a
    run id that cannot be a file name is skipped with a warning. Returns the files written."""
    written = []
    for record in recs:
        plain = portable(record)
        if not RUN_ID.fullmatch(plain["run_id"]):
            warn(f"not carried: run id {plain['run_id']!r} is not a file name")
            continue
        text = json.dumps(plain, indent=2, sort_keys=True) + "\n"
        path = out / CARRIED / f"{plain['run_id']}.json"
        if path.exists():
            try:
                same = path.read_text() == text
            except (OSError, UnicodeDecodeError):
                same = False
            if same:
                continue
            if not force:
                warn(f"kept {path}: it holds another copy of that run (use --force to replace it)")
                continue
            if path.is_dir():
                warn(f"not carried: {path} is a folder")
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        written.append(path)
    return written


def repeated_cells(recs: list[dict[str, Any]]) -> list[str]:
    """One line per (prior, seed) that more than one run fills in one setting (same backbone
    export, features, condition, source run): tables pool such runs as if they were seeds."""
    cells: dict[tuple, list[str]] = {}
    for r in recs:
        key = (r["kind"], r["prior"], r["seed"], r["export_hash"], r["extractor"].get("id"),
               r.get("condition"), (r.get("against") or {}).get("run_id"))
        cells.setdefault(key, []).append(r["run_id"])
    return [f"{key[1]} seed {key[2]} is filled by {len(ids)} runs ({', '.join(sorted(ids))}): "
            f"the table pools them as separate seeds" for key, ids in cells.items() if len(ids) > 1]


def versions() -> dict[str, str | None]:
    """What made a record or fit: package versions, the source commit (`source_commit`) and
    when it was written (UTC), so that rows of one table gathered over several sessions or
    machines (`bench compare --from`) say which code produced each."""
    return {"bench": bench.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "commit": source_commit(),
            "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit (12 hex digits) of the checkout bench runs from, '+dirty' when its code
    (bench, priors, vqvae, trainkit, pyproject.toml) differs from it; None when bench is not
    run from its own checkout (an installed wheel, or a folder inside some other repository)
    or git is missing. Read once, when this module is first imported: the code a process runs
    is the code it loaded, whatever is committed while it works."""
    root = Path(bench.__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no GIT_DIR etc.

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                                  capture_output=True, text=True, timeout=20, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root or not (root / "bench" / "records.py").is_file():
        return None
    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--",
                "bench", "priors", "vqvae", "trainkit", "pyproject.toml")
    return head[:12] + ("+dirty" if dirty else "")


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes), or None where the OS has none.
    Stored beside a record's wall times: on a machine of C cores a run alone adds about its own
    threads; well above that, other jobs shared the cores and the times are not the run's alone
    (measured: two 2-thread processes on 2 cores slowed nearest-SSIM scoring 5-13x)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_load(before: float | None) -> dict[str, Any]:
    """What a record stores beside wall times taken since `load_average()` gave `before`: the
    1-minute load then and now, and the logical cores."""
    return {"load_avg": [before, load_average()], "cpu_count": os.cpu_count()}


source_commit()  # at import: see its docstring
