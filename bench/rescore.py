"""`bench score RUN_DIR --against SPEC`: a finished run's samples scored against the test split
of another dataset (another site, held-back subjects), so that a ranking can be checked on data
the run never saw.

Nothing is retrained: the run's own frozen backbone and feature extractor are read from its
results folder by the paths and ids its record names, and its stored sample codes are decoded
with that backbone. Two records are written through the store, each an artefact of kind `runs`
with an `against` field: the run's samples re-scored (with its prior's bits/code on the other
test codes, when it has a likelihood), and a reference row, the backbone's reconstructions of
test images of the other half of the other dataset's test subjects, scored the same way. Memorisation concerns the run's
training set: the re-scored row keeps the run's own value, the reference row has none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import priors
from bench import records
from bench.data import DataConfig, ImageDataset, dataset_identity, fingerprint_of
from bench.errors import ArtefactError, BenchError
from bench.extractors import stored_extractor
from bench.presets import Preset, get_preset
from bench.progress import RichProgress, err_console
from bench.run import (REFERENCE, WEIGHTS, RunConfig, RunResult, device_name,
                       n_scored, open_store, resolve_device)
from bench.sampling import code_set, measure_bits
from bench.scoring import REAL_SIDE, ScoringContext, make_context, score_codes
from bench.stages import StageContext, backbone_scores, stage_data, stage_export
from bench.store import MANIFEST, Artefact, Store, load_tensors, read_json
from priors import Prior
from trainkit import Checkpoint, Progress
from vqvae import VQVAE, CheckpointError, CodeExport, load_backbone
from vqvae.train import to_float

MEMORISATION_NOTE = "the run's own score (against its training set), not re-scored"


@dataclass(frozen=True)
class ScoreConfig:
    run_dir: Path  # RESULTS/runs/<prior>-<id>: a finished run of a prior
    against: str  # dataset spec whose test split the run's samples are scored against
    out: Path | None = None  # results folder of the new records; None: the run's own
    preset: str = ""  # data settings SPEC is loaded with; "": the run's own preset
    device: str = "auto"  # auto | cpu | cuda
    fid_weights: Path | None = None  # Inception weights file, for a run scored with inception
    skip_bad: bool = False  # skip unusable or misnamed files of SPEC, named in a note
    force: bool = False  # rebuild the records (and SPEC's cache and codes), never the run's


@dataclass(frozen=True)
class FinishedRun:
    """A finished run of a prior, as its results folder holds it."""

    root: Path  # the results folder
    directory: Path  # root/runs/<name>
    record: dict[str, Any]
    key: str  # the run's content key (from its manifest)

    def artefact(self, stage: str) -> Path:
        return self.root / self.record["artefacts"][stage]


def open_run(run_dir: Path) -> FinishedRun:
    """The finished run in `run_dir`, or one line saying why it is not one."""
    directory = Path(run_dir)
    if not directory.is_dir() or directory.parent.name != "runs":
        raise BenchError(f"{run_dir} is not a run folder; give RESULTS/runs/<prior>-<id>, one of "
                         f"the folders `bench run` writes")
    if not (directory / MANIFEST).is_file():
        raise BenchError(f"{run_dir} is not a finished run (no {MANIFEST}); finish it with the "
                         f"same `bench run` command first")
    store = Store(directory.parent.parent)
    manifest = store.verify_dir(directory)
    record = records.read(directory)
    if record["kind"] != "prior" or "artefacts" not in record:
        raise BenchError(f"{run_dir} holds a {record['kind']} row, not a run of a prior; "
                         f"give one of the runs/<prior>-<id> folders")
    if record.get("against"):
        raise BenchError(f"{run_dir} holds samples already re-scored against "
                         f"{record['dataset']!r}; give the run it came from, "
                         f"{record['against']['run']}")
    return FinishedRun(store.root, directory, record, str(manifest.get("key", "")))


def run_backbone(run: FinishedRun) -> tuple[VQVAE, dict[str, Any]]:
    """The run's frozen backbone, verified, with its record (never retrained)."""
    directory = run.artefact("backbone")
    try:
        Store(run.root).verify_dir(directory)
        model, record = load_backbone(directory)
    except (ArtefactError, CheckpointError) as e:
        raise ArtefactError(f"the backbone of run {run.record['run_id']} is not usable "
                            f"({' '.join(str(e).split())[:200]})") from None
    if record["hash"] != run.record["backbone_hash"]:
        raise ArtefactError(f"{directory} holds backbone {record['hash'][:12]}, the run names "
                            f"{run.record['backbone_hash'][:12]}")
    return model, record


def data_config(cfg: ScoreConfig, run: FinishedRun,
                backbone: dict[str, Any]) -> tuple[DataConfig, Preset]:
    """The settings SPEC is loaded with: the run's resolution and data seed; mni sizes from the
    preset. A preset of another resolution is refused: samples and images must match."""
    name = cfg.preset or run.record["preset"]
    try:
        preset: Preset = get_preset(name)
    except BenchError as e:
        if cfg.preset:
            raise
        raise BenchError(f"run {run.record['run_id']} used preset {name!r}, which is not a "
                         f"built-in preset ({e}); pass its file with --preset "
                         f"{name}.toml") from None
    resolution = int(backbone["meta"]["image_size"])
    if preset.resolution != resolution:
        raise BenchError(f"cannot score run {run.record['run_id']} against {cfg.against!r} at "
                         f"{preset.resolution} px (preset {preset.name}): its backbone and samples "
                         f"are {resolution} px (preset {run.record['preset']}); leave --preset out "
                         f"or give one of {resolution} px")
    return DataConfig(resolution=resolution, seed=int(backbone["meta"]["train"]["seed"]),
                      mni_sizes=preset.mni_sizes, skip_bad=cfg.skip_bad), preset


def check_other_data(cfg: ScoreConfig, run: FinishedRun, ds: ImageDataset,
                     source_key: str) -> None:
    """Refuse the run's own data: any spelling of its folder, or a copy of it (the fingerprint
    is the decoded content; the run's own folder is a cache hit, nothing is decoded again).
    Runs recorded before content fingerprints hold their sources' key: compared too."""
    if (run.record.get("data") or {}).get("fingerprint") in (ds.fingerprint, source_key):
        raise BenchError(f"{cfg.against!r} is the dataset run {run.record['run_id']} was trained "
                         f"and scored on; its scores are in the run's record. Give another "
                         f"dataset (another site, held-back subjects)")


def label_names_of(run: FinishedRun) -> tuple[str, ...]:
    return tuple(read_json(run.artefact("export") / "manifest.json").get("label_names", ()))


def against_artefacts(run: FinishedRun, ds: ImageDataset, extractor_id: str,
                      n: int) -> dict[str, Artefact]:
    """The two records: the re-scored run (per run) and the reference row (per backbone, data,
    features, n, seed and condition: shared by every run of one setting scored against SPEC)."""
    r = run.record
    return {
        "prior": Artefact.of("runs", {"against": ds.fingerprint, "run": run.key,
                                      "extractor": extractor_id, "n": n,
                                      "real_side": REAL_SIDE},
                             prefix=f"{r['prior']}-against-", digits=12),
        "reference": Artefact.of("runs", {"kind": "reference", "against": ds.fingerprint,
                                          "backbone": r["backbone_hash"], "extractor": extractor_id,
                                          "n": n, "seed": r["seed"], "condition": r["condition"],
                                          "real_side": REAL_SIDE},
                                 prefix="reference-against-", digits=12)}


@dataclass(frozen=True)
class Other:
    """The other dataset, coded by the run's backbone, and where the new records go."""

    out: Path  # results folder of the new records
    ds: ImageDataset
    export: CodeExport
    backbone: dict[str, float]  # the run's backbone on this dataset: recon, code usage
    artefacts: dict[str, str]  # backbone, export -> folder relative to `out`
    labelled: bool  # True: a conditional run whose classes this dataset has, scored per class


def prepare_other(run: FinishedRun, ds: ImageDataset, model: VQVAE, backbone: dict[str, Any],
                  sc: StageContext) -> Other:
    export, ex_art = stage_export(ds, model, backbone, sc)
    labelled = (run.record["condition"] == "label" and bool(ds.label_names)
                and tuple(ds.label_names) == label_names_of(run))
    if run.record["condition"] == "label" and not labelled:
        err_console.print(f"[yellow]note:[/] {ds.spec!r} has classes {list(ds.label_names)}, the "
                          f"run {list(label_names_of(run))}: pooled scores only, no per-class "
                          f"scores and no bits/code of its conditional prior")
    out = sc.store.root
    artefacts = {"backbone": os.path.relpath(run.artefact("backbone"), out),
                 "export": f"{ex_art.kind}/{ex_art.name}"}
    return Other(out, ds, export, backbone_scores(model, ds, export, sc), artefacts, labelled)


def base_record(run: FinishedRun, other: Other, ctx: ScoringContext) -> dict[str, Any]:
    """What both new records share. Tables group them by the other dataset (`data`) and say
    where the samples come from (`against`)."""
    r = run.record
    return {"dataset": other.ds.spec, "data": dataset_identity(other.ds.spec, other.ds.fingerprint),
            "preset": r["preset"], "preset_hash": r.get("preset_hash"), "seed": r["seed"],
            "backbone_hash": r["backbone_hash"], "export_hash": other.export.export_hash,
            "num_codes": other.export.num_codes, "grid": list(other.export.grid),
            "backbone": other.backbone, "artefacts": other.artefacts,
            "extractor": {"name": ctx.extractor.name, "id": ctx.extractor.id},
            "real_side": REAL_SIDE, "condition": r["condition"], "versions": records.versions(),
            "against": {"run_id": r["run_id"], "run": os.path.relpath(run.directory, other.out),
                        "dataset": r["dataset"],
                        "data": r.get("data") or dataset_identity(r["dataset"], ""),
                        "memorisation": MEMORISATION_NOTE}}


def stored_prior(run: FinishedRun, tensors: dict[str, torch.Tensor], export: CodeExport,
                 num_classes: int, device: torch.device) -> Prior:
    """The run's fitted prior from its recorded config and stored weights (never refitted):
    its fit artefact's, or, in a run stored before fits were artefacts of their own, the run's."""
    r = run.record
    cls = priors.get_prior(r["prior"])
    if "fit" in r["artefacts"]:
        try:
            Store(run.root).verify_dir(run.artefact("fit"))
        except ArtefactError as e:
            raise ArtefactError(f"the fitted prior of run {r['run_id']} is not usable "
                                f"({' '.join(str(e).split())[:200]})") from None
        state = load_tensors(run.artefact("fit") / WEIGHTS)
    else:
        state = {k.removeprefix("prior/"): v for k, v in tensors.items() if k.startswith("prior/")}
    try:  # JSON keeps tuples as lists; prior configs are flat frozen dataclasses
        config = cls.Config(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in r["config"].items()})
        prior = cls(config, num_codes=export.num_codes, grid=export.grid, num_classes=num_classes,
                    codebook=export.codebook, device=device)
        prior.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ArtefactError(f"the prior of run {r['run_id']} no longer loads from its record "
                            f"({' '.join(str(e).split())[:200]}); was {r['prior']!r} changed "
                            f"since the run?") from None
    return prior


def bits_on_other(run: FinishedRun, tensors: dict[str, torch.Tensor], other: Other,
                  device: torch.device, *, checkpoint: Checkpoint | None = None,
                  progress: Progress | None = None) -> float | None:
    """The run's prior's test bits/code on the other dataset's codes (resumable from
    `checkpoint`, as after a fit); None without a likelihood, or for a conditional prior on
    data without its classes."""
    conditional = run.record["condition"] == "label"
    likelihood = priors.get_prior(run.record["prior"]).has_likelihood
    if not likelihood or (conditional and not other.labelled):
        return None
    num_classes = len(other.ds.label_names) if conditional else 0
    prior = stored_prior(run, tensors, other.export, num_classes, device)
    return measure_bits(prior, code_set(other.export, "test", conditional),
                        checkpoint=checkpoint, progress=progress).bits


def reference_row(run: FinishedRun, other: Other, model: VQVAE, ctx: ScoringContext,
                  rest: np.ndarray, art: Artefact, sc: StageContext) -> dict[str, Any]:
    """The run's backbone reconstructing test images of the other dataset (`rest`, the other
    half of its test subjects from those scored against), scored exactly like the samples."""
    test = other.ds.splits["test"]
    codes = other.export.codes["test"][torch.from_numpy(rest)]
    labels = torch.from_numpy(np.asarray(test.labels)[rest]) if other.labelled else None

    def build(directory: Path) -> None:
        scores = score_codes(model, codes, labels, ctx, seed=run.record["seed"], device=sc.device,
                             originals=to_float(test.images[rest], sc.device))
        record = base_record(run, other, ctx) | {
            "kind": "reference", "prior": REFERENCE, "run_id": art.name, "scores": scores,
            "device": device_name(sc.device)}
        records.writer(record, {"samples/codes": codes})(directory)

    return sc.build(art, build, records.read, stage="export")[0]


def rescored_row(run: FinishedRun, other: Other, model: VQVAE, ctx: ScoringContext,
                 tensors: dict[str, torch.Tensor], n: int, art: Artefact,
                 sc: StageContext) -> tuple[dict[str, Any], bool]:
    """The run's first n samples decoded by its backbone and scored against the other test
    split; its memorisation is the run's own (it concerns the run's training set)."""
    r = run.record
    codes = tensors["samples/codes"][:n]
    labels = tensors["samples/labels"][:n] if other.labelled else None

    def build(directory: Path) -> None:
        scores = score_codes(model, codes, labels, ctx, seed=r["seed"], device=sc.device)
        scores |= {"memorisation": r["scores"].get("memorisation"),
                   "bits_per_code": bits_on_other(run, tensors, other, sc.device,
                                                  checkpoint=sc.checkpoint(art, "bits"),
                                                  progress=sc.progress)}
        record = base_record(run, other, ctx) | {
            "kind": "prior", "prior": r["prior"], "run_id": art.name, "config": r["config"],
            "scores": scores, "device": device_name(sc.device)}
        kept = {"samples/codes": codes} | ({} if labels is None else {"samples/labels": labels})
        records.writer(record, kept)(directory)

    return sc.build(art, build, records.read, stage="run")


def score_run(cfg: ScoreConfig, *, progress: RichProgress | None = None) -> RunResult:
    """Score the finished run in `cfg.run_dir` against the test split of `cfg.against`; every
    check that can refuse the pair runs before anything is encoded or scored."""
    run = open_run(cfg.run_dir)
    model, backbone = run_backbone(run)
    data_cfg, preset = data_config(cfg, run, backbone)
    source_key, _ = fingerprint_of(cfg.against, data_cfg)  # layout errors (no test/) come here
    sc = StageContext(store=open_store(cfg.out or run.root), device=resolve_device(cfg.device),
                      progress=progress or RichProgress(), force=cfg.force)
    extractor = stored_extractor(run.record["extractor"]["name"], run.record["extractor"]["id"],
                                 store=Store(run.root), device=sc.device,
                                 weights_path=cfg.fid_weights)
    tensors = records.read_tensors(run.directory)
    ds = stage_data(cfg.against, data_cfg, sc)
    check_other_data(cfg, run, ds, source_key)
    n = n_scored(RunConfig(dataset=cfg.against, n_samples=len(tensors["samples/codes"])),
                 preset, ds, seed=data_cfg.seed)
    arts = against_artefacts(run, ds, extractor.id, n)
    if sc.store.exists(arts["prior"]) and not cfg.force:
        err_console.print(f"score: finished record found at {sc.store.dir(arts['prior'])}; "
                          f"use --force to recompute")
        stored = tuple(sc.store.read(a, records.read) for a in (arts["reference"],)
                       if sc.store.exists(a))
        return RunResult(sc.store.read(arts["prior"], records.read), sc.store.dir(arts["prior"]),
                         cached=True, ceilings=stored)
    other = prepare_other(run, ds, model, backbone, sc)
    test = ds.splits["test"]
    ctx, rest = make_context(test.images, test.labels if other.labelled else None, None,
                             other.export.codes["test"], other.export.num_codes, extractor,
                             ds.label_names if other.labelled else (), n=n,
                             seed=data_cfg.seed, subjects=test.subjects, strata=test.labels,
                             backbone=model, device=sc.device)
    reference = reference_row(run, other, model, ctx, rest, arts["reference"], sc)
    record, built = rescored_row(run, other, model, ctx, tensors, n, arts["prior"], sc)
    return RunResult(record, sc.store.dir(arts["prior"]), cached=not built, ceilings=(reference,))
