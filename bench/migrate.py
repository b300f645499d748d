"""`bench migrate`: bring a results folder written by an earlier version up to date without
training anything again.

Up to version 0.6 a run folder held the fitted prior's weights beside its samples and scores,
under a key that included how it was scored. Now the fit is an artefact of its own (`fits/`,
keyed by what the fit depends on) and a run is its fit's samples scored (`runs/`), so that a
change of scoring re-scores stored fits instead of refitting them. This module

1. turns the weights, fit summary and test bits/code of each old run of a prior into the fit
   artefact the current `bench run` looks up for the same prior, config, export, seed, condition
   and preset (the key computed by `bench.run.fit_artefact`, never guessed), and
2. moves every record scored under another definition than the current one (`real_side`)
   out of `runs/` into `superseded/runs/`, so that tables hold one definition; nothing is
   deleted.

The next `bench run` of the same command then samples and scores the stored fit. Fits are
written through the store (locks, staging, manifests); a record is moved by one rename, so a
process reading the folder meanwhile sees it either in `runs/` or gone, never half-moved.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import records
from bench.errors import ArtefactError
from bench.rescore import FinishedRun, stored_prior
from bench.run import RunConfig, fit_artefact, write_fit
from bench.scoring import REAL_SIDE
from bench.store import Store
from vqvae import CheckpointError, load_export

SUPERSEDED = "superseded"


@dataclass
class Migration:
    fits: list[str] = field(default_factory=list)  # fit artefacts written (kind/name)
    found: list[str] = field(default_factory=list)  # fits that were already stored
    moved: list[str] = field(default_factory=list)  # records moved to superseded/runs
    skipped: list[str] = field(default_factory=list)  # 'folder: why' left where they were


def legacy_fit(record: dict[str, Any]) -> bool:
    """Whether a run record holds its prior's weights itself (the layout before `fits/`; a
    prior without weights, like uniform, holds none)."""
    return (record["kind"] == "prior" and not record.get("against")
            and "fit" not in record.get("artefacts", {}))


def fit_of(out: Path, directory: Path, record: dict[str, Any], manifest: dict[str, Any],
           store: Store, report: Migration) -> None:
    """The fit artefact of an old run of a prior, written from its weights and record, under
    the key a current `bench run` computes; the training precision is the one the old run's key
    resolved on the device it trained on (its manifest), not this machine's."""
    export_dir = out / record["artefacts"]["export"]
    try:
        export = load_export(export_dir, backbone=record["backbone_hash"])
    except (CheckpointError, ArtefactError, OSError) as e:
        raise ArtefactError(f"its code export {export_dir} does not load ({e})") from None
    num_classes = len(export.label_names) if record["condition"] == "label" else 0
    prior = stored_prior(FinishedRun(out, directory, record, str(manifest.get("key", ""))),
                         records.read_tensors(directory), export, num_classes,
                         torch.device("cpu"))  # the old run's weights, in that prior and config
    preset = types.SimpleNamespace(name=record["preset"], content_hash=record["preset_hash"])
    cfg = RunConfig(prior=record["prior"], seed=record["seed"], condition=record["condition"])
    art = fit_artefact(cfg, preset, prior, export,
                       precision=((manifest.get("deps") or {}).get("config") or {}).get("precision"))
    scores, timing = record["scores"], record.get("timing", {})

    def build(staging: Path) -> None:
        write_fit(staging, prior.state_dict(), {
            "prior": record["prior"], "config": record["config"], "fit": record["fit"],
            "fit_s": scores["fit_s"], "bits_per_code": scores.get("bits_per_code"),
            "bits_s": timing.get("bits_s"), "num_parameters": int(scores["num_parameters"]),
            "device": record["device"], "curves": record.get("curves", {}),
            "export_hash": record["export_hash"], "seed": record["seed"],
            "condition": record["condition"], "versions": record.get("versions", {}),
            "migrated_from": f"runs/{directory.name}"})

    _, built = store.get_or_build(art, build, lambda d: d)
    (report.fits if built else report.found).append(art.label)


def migrate(out: Path) -> Migration:
    """Migrate the results folder `out` (see the module's docstring)."""
    store = Store(out).prepare()
    report = Migration()
    found = []
    for directory in store.finished("runs"):
        try:
            manifest = store.verify_dir(directory)
            found.append((directory, records.read(directory), manifest))
        except ArtefactError as e:
            report.skipped.append(f"{directory}: {' '.join(str(e).split())[:200]}")
    old = set()
    for directory, record, manifest in found:
        if record.get("real_side") == REAL_SIDE:
            continue  # current
        try:
            if legacy_fit(record):
                fit_of(out, directory, record, manifest, store, report)
        except (ArtefactError, KeyError, TypeError, ValueError, RuntimeError) as e:
            report.skipped.append(f"{directory}: {' '.join(str(e).split())[:200]}")
            continue
        old.add(directory.name)
    # a current `bench score` record of a run that moves would point at nothing: it moves too
    old |= {d.name for d, r, _ in found
            if Path((r.get("against") or {}).get("run", "")).name in old}
    for directory in sorted(d for d, _, _ in found if d.name in old):
        target = out / SUPERSEDED / "runs" / directory.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            report.skipped.append(f"{directory}: {target} exists already")
            continue
        os.replace(directory, target)  # a committed folder is never written again: one rename
        report.moved.append(f"runs/{directory.name}")
    for path in sorted((out / records.CARRIED).glob("*.json")):  # carried from elsewhere
        record = records.read_carried_file(path)
        if record is None or record.get("real_side") == REAL_SIDE:
            continue  # not a record (compare names it), or current
        target = out / SUPERSEDED / records.CARRIED / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        report.moved.append(f"{records.CARRIED}/{path.name}")
    return report
