"""The pipeline: data -> frozen backbone -> code export -> prior -> samples -> scores -> record.

Every stage is an artefact of the store (bench/store.py), keyed by its content: a second prior
reuses the backbone, the export, the feature extractor and the ceiling rows of the first, and
concurrent processes on one results folder build each of them once.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import priors
from bench import records
from bench.data import DataConfig, ImageDataset, dataset_identity
from bench.errors import ArtefactError, BenchError
from bench.extractors import check_extractor
from bench.extractors.base import FeatureExtractor
from bench.presets import Preset, get_preset
from bench.progress import RichProgress, err_console
from bench.sampling import code_set, measure_bits, sample_labels, sample_prior
from bench.scoring import (REAL_SIDE, SampleSet, ScoringContext, make_context, score_codes,
                           score_samples, subject_halves)
from bench.stages import (STAGES, StageContext, backbone_scores, check_precision, data_twins,
                          precision_keyed, stage_backbone, stage_data, stage_export,
                          stage_extractor)
from bench.store import (Artefact, Store, load_tensors, read_json, save_tensors,
                         write_json_atomic)
from bench.torchrun import Ranks, check_batches, session
from bench.validate import preflight
from priors import Prior
from priors.base import cache_key_fields
from vqvae import VQVAE, CodeExport, decode_codes
from vqvae.train import PRECISIONS, to_float

CONDITIONS = ("none", "label")


@dataclass(frozen=True)
class RunConfig:
    prior: str = "pixelcnn"  # registry name
    dataset: str = "mni"  # dataset spec
    preset: str = "quick"  # built-in name (tiny | quick | standard | full) or a .toml path
    seed: int = 0  # prior init, training order and sampling
    backbone_seed: int = 0  # the backbone is shared by every prior and seed compared
    device: str = "auto"  # auto | cpu | cuda
    out: Path = Path("results")  # results folder
    extractor: str = "mri"  # feature extractor for FD / KID / precision / recall
    fid_weights: Path | None = None  # Inception weights file for extractor "inception"
    condition: str = "none"  # none | label (class-conditional priors on labelled data)
    n_samples: int = 0  # samples to score; 0 = the preset's
    force: bool = False  # rebuild every stage (each once per command), the finished run too
    force_from: str | None = None  # rebuild this stage (bench.stages.STAGES) and every later one
    skip_bad: bool = False  # skip unusable or misnamed files, named in a note
    checkpoint_every_s: float = 60.0  # seconds between training checkpoints (0: every step)
    precision: str | None = None  # fp32 | bf16 | auto, backbone and prior; None: the preset's
    ddp_timeout_s: float = 3600.0  # under torchrun: longest wait of one rank for the others
    # (ranks > 0 wait while rank 0 alone builds the data cache, extractor and scores)

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise BenchError(f"unknown --condition {self.condition!r}; available: "
                             f"{', '.join(CONDITIONS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BenchError(f"unknown --device {self.device!r}; available: auto, cpu, cuda")
        if self.force_from is not None and self.force_from not in STAGES:
            raise BenchError(f"unknown --force-from {self.force_from!r}; available: "
                             f"{', '.join(STAGES)} (each rebuilds that stage and the later ones)")
        if self.force and self.force_from is not None:
            raise BenchError(f"give --force (every stage) or --force-from {self.force_from}, "
                             f"not both")
        if self.n_samples < 0:
            raise BenchError(f"--n-samples must be >= 0, got {self.n_samples}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise BenchError(f"unknown --precision {self.precision!r}; available: "
                             f"{', '.join(PRECISIONS)}")
        if self.checkpoint_every_s < 0:
            raise BenchError(f"--checkpoint-every must be >= 0 seconds, got "
                             f"{self.checkpoint_every_s}")
        if self.ddp_timeout_s <= 0:
            raise BenchError(f"--ddp-timeout must be > 0 seconds, got {self.ddp_timeout_s}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for, but torch sees no CUDA device; "
                         "use --device cpu or auto")
    return torch.device(name)


def build_prior(cfg: RunConfig, preset: Preset, export: CodeExport, device: torch.device) -> Prior:
    """The prior of `cfg`, unfitted (check_options has refused impossible conditioning)."""
    cls = priors.get_prior(cfg.prior)
    conditional = cfg.condition == "label"
    return cls(preset.prior_config(cls), num_codes=export.num_codes,
               grid=export.grid,
               num_classes=len(export.label_names) if conditional else 0,
               codebook=export.codebook, device=device)


def fit_artefact(cfg: RunConfig, preset: Preset, prior: Prior, export: CodeExport, *,
                 precision: str | None = None) -> Artefact:
    """The fitted prior: keyed by what the fit depends on (not by how it is scored), so that a
    change of scoring re-scores stored fits instead of training them again. (The preset's
    identity is in the key, so a preset file edited or renamed, even in its `n_samples` alone,
    fits again.) `precision`: the resolved training precision to key on (`bench migrate`: the
    one an old run recorded); None: the prior's, as it resolves on its device."""
    config = cache_key_fields(prior.config)
    if "precision" in config:  # keyed as it resolved on the device, not as configured
        config = precision_keyed(config, precision or prior.training_precision())
    return Artefact.of("fits", {"prior": cfg.prior, "config": config,
                                "export": export.export_hash, "seed": cfg.seed,
                                "condition": cfg.condition, "preset": preset_identity(preset)},
                       prefix=f"{cfg.prior}-", digits=12)


def run_artefact(cfg: RunConfig, preset: Preset, prior: Prior, export: CodeExport,
                 extractor_id: str, n_samples: int) -> Artefact:
    """A run: its fit's n samples scored with one extractor against one real side."""
    fit = fit_artefact(cfg, preset, prior, export)
    return Artefact.of("runs", {"fit": fit.key, "extractor": extractor_id,
                                "n_samples": n_samples, "real_side": REAL_SIDE},
                       prefix=f"{cfg.prior}-", digits=12)


def preset_identity(preset: Preset) -> dict[str, str]:
    """A preset by name and content hash: an edited preset file never matches an old run."""
    return {"name": preset.name, "content_hash": preset.content_hash}


# --- orchestration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    record: dict[str, Any]
    directory: Path
    cached: bool  # True: an identical finished run was found and nothing was recomputed
    ceilings: tuple[dict[str, Any], ...] = ()  # the ceiling rows of the same setting


@dataclass(frozen=True)
class Shared:
    """The artefacts one run shares with every other run of its setting."""

    preset: Preset
    ds: ImageDataset
    model: VQVAE
    export: CodeExport
    artefacts: dict[str, str]  # stage -> folder relative to the results root
    backbone: dict[str, float]  # recon SSIM / PSNR, code usage
    backbone_training: dict[str, Any]  # how long the backbone trained, where, how loaded
    twins: dict[str, int]  # split -> subjects that are twins of a training subject (data_twins)


REFERENCE = "reference (recon of other test subjects)"
DATA_CEILING = "reference (decoded train grids)"


def ceiling_rows(cfg: RunConfig, shared: Shared, ctx: ScoringContext, rest: np.ndarray,
                 sc: StageContext) -> tuple[dict[str, Any], ...]:
    """The two ceilings every table carries, scored exactly like samples:
    - REFERENCE: the backbone's reconstructions of real test images of the other half of the
      test subjects (`rest`: no subject of the real side scored against): a prior that modelled
      the test population perfectly (it, too, meets only new subjects);
    - DATA_CEILING: the decoded codes of real training grids, drawn from the training images
      memorisation compares against: a prior that learnt its training split perfectly (its
      memorised share is high by construction)."""
    test = shared.ds.splits["test"]
    test_labels = None if test.labels is None else torch.from_numpy(np.asarray(test.labels))
    n = len(rest)
    pick = np.random.default_rng(cfg.seed).choice(len(ctx.train_index), min(n, len(ctx.train_index)),
                                                  replace=False)
    train_index = torch.from_numpy(ctx.train_index[np.sort(pick)])
    train_codes = shared.export.codes["train"][train_index]
    train_labels = shared.export.labels.get("train")
    sources = {
        "reference": (REFERENCE, shared.export.codes["test"][torch.from_numpy(rest)],
                      None if test_labels is None else test_labels[torch.from_numpy(rest)],
                      to_float(test.images[rest], sc.device)),
        "ceiling": (DATA_CEILING, train_codes,
                    None if train_labels is None else train_labels[train_index],
                    None),
    }
    rows = []
    arts = ceiling_artefacts(cfg, shared.export, ctx.extractor.id, n)
    for kind, (name, codes, labels, originals) in sources.items():
        art = arts[kind]

        def build(directory: Path, name=name, codes=codes, labels=labels, originals=originals,
                  kind=kind, art=art) -> None:
            use_labels = labels if cfg.condition == "label" else None
            scores = score_codes(shared.model, codes, use_labels, ctx, seed=cfg.seed,
                                 device=sc.device, originals=originals)
            record = base_record(cfg, shared, ctx) | {
                "kind": kind, "prior": name, "run_id": art.name, "scores": scores,
                "device": device_name(sc.device)}
            records.writer(record, {"samples/codes": codes})(directory)

        record, _ = sc.build(art, build, records.read, stage="export")
        rows.append(record)
    warn_if_splits_differ(rows[0], rows[1], ctx.extractor.name)
    return tuple(rows)


def ceiling_artefacts(cfg: RunConfig, export: CodeExport, extractor_id: str,
                      n: int) -> dict[str, Artefact]:
    return {kind: Artefact.of("runs", {"kind": kind, "export": export.export_hash,
                                       "extractor": extractor_id, "n": n, "seed": cfg.seed,
                                       "condition": cfg.condition, "real_side": REAL_SIDE},
                              prefix=f"{kind}-", digits=12)
            for kind in ("reference", "ceiling")}


def stored_ceilings(cfg: RunConfig, sc: StageContext, export: CodeExport, extractor_id: str,
                    n: int) -> tuple[dict[str, Any], ...]:
    """The ceiling rows of a setting when they are already stored (for a cached run)."""
    arts = ceiling_artefacts(cfg, export, extractor_id, n).values()
    if not all(sc.store.exists(a) for a in arts):
        return ()
    return tuple(sc.store.read(a, records.read) for a in arts)


def splits_differ(reference: dict[str, float], ceiling: dict[str, float], ratio: float = 2.0,
                  sigmas: float = 3.0) -> bool:
    """Whether the data ceiling's scores say train and test differ: its FD over `ratio` x the
    reference row's, and its KID (unbiased: 0 in expectation for one distribution) above the
    reference row's by more than `sigmas` of their subset spreads. Both rows sit near the
    sampling floor when the splits agree (FD ~0.01-0.02 against decoded test codes), where an
    FD ratio alone is noise."""
    fd_ref, fd_data = reference.get("fd"), ceiling.get("fd")
    if fd_ref is None or fd_data is None or fd_data <= ratio * max(fd_ref, 1e-9):
        return False
    kid_ref, kid_data = reference.get("kid"), ceiling.get("kid")
    if kid_ref is None or kid_data is None:
        return True
    noise = math.hypot(reference.get("kid_std", 0.0), ceiling.get("kid_std", 0.0))
    return kid_data - kid_ref > sigmas * noise


def warn_if_splits_differ(reference: dict[str, Any], ceiling: dict[str, Any], extractor: str,
                          ratio: float = 2.0) -> None:
    fd_ref, fd_data = reference["scores"].get("fd"), ceiling["scores"].get("fd")
    if splits_differ(reference["scores"], ceiling["scores"], ratio):
        err_console.print(
            f"[yellow]warning:[/] train and test differ: FD-{extractor} of decoded training grids "
            f"is {fd_data:.3g}, over {ratio:g}x the {fd_ref:.3g} of reconstructions of other test "
            f"subjects; a prior that learns its training split cannot reach the reference row")


def base_record(cfg: RunConfig, shared: Shared, ctx: ScoringContext) -> dict[str, Any]:
    preset = preset_identity(shared.preset)
    return {"dataset": cfg.dataset, "data": dataset_identity(shared.ds.spec, shared.ds.fingerprint),
            "preset": preset["name"], "preset_hash": preset["content_hash"],
            "seed": cfg.seed, "backbone_hash": shared.export.backbone_hash,
            "export_hash": shared.export.export_hash, "num_codes": shared.export.num_codes,
            "grid": list(shared.export.grid), "backbone": shared.backbone,
            "backbone_training": shared.backbone_training, "twins": shared.twins,
            "artefacts": shared.artefacts,  # + "fit" in a prior's run record
            "extractor": {"name": ctx.extractor.name, "id": ctx.extractor.id},
            "real_side": REAL_SIDE, "condition": cfg.condition, "versions": records.versions()}


def check_options(cfg: RunConfig, ds: ImageDataset | None = None) -> None:
    """Refuse option combinations that cannot work, before any training."""
    cls = priors.get_prior(cfg.prior)
    check_extractor(cfg.extractor, cfg.fid_weights)
    if cfg.condition == "label" and not cls.conditional:
        conditional = [n for n in priors.available_priors() if priors.get_prior(n).conditional]
        raise BenchError(f"prior {cfg.prior!r} is not class-conditional; conditional priors: "
                         f"{', '.join(conditional)}")
    if ds is None or cfg.condition != "label":
        return
    if not ds.label_names:
        raise BenchError(f"--condition label needs a labelled dataset; {cfg.dataset!r} has no "
                         f"labels (labelled: adni:PATH, or folder:PATH with class folders)")
    empty = [name for name, count in ds.class_counts("train").items() if count == 0]
    if empty:
        raise BenchError(f"--condition label: class(es) {', '.join(empty)} of {cfg.dataset!r} "
                         f"have no training images; a conditional prior cannot learn them")


def n_scored(cfg: RunConfig, preset: Preset, ds: ImageDataset, seed: int | None = None) -> int:
    """Samples scored: the preset's (or --n-samples), at most what each half of the test
    subjects holds (`seed`: the halves' seed; None: the run's backbone seed)."""
    test = ds.splits["test"]
    wanted = cfg.n_samples or preset.n_samples
    halves = [len(h) for h in subject_halves(test.subjects, test.labels,
                                             cfg.backbone_seed if seed is None else seed)]
    n = min(wanted, *halves)
    if n < 4:
        raise BenchError(f"scoring needs at least 4 samples against 4 real test images (k-NN "
                         f"precision / recall) from each half of the test subjects; "
                         f"{cfg.dataset!r} has {len(test)} test images, halves of "
                         f"{halves[0]} and {halves[1]}, and {wanted} samples were asked for")
    if n < wanted:
        err_console.print(f"[yellow]note:[/] {wanted} samples asked for, {n} scored: samples "
                          f"are compared with n test images of one half of the test subjects "
                          f"and the reference row takes n of the other; the halves hold "
                          f"{halves[0]} and {halves[1]}")
    return n


def prepare_shared(cfg: RunConfig, preset: Preset, sc: StageContext) -> Shared:
    data_cfg = DataConfig(resolution=preset.resolution, seed=cfg.backbone_seed,
                          mni_sizes=preset.mni_sizes, skip_bad=cfg.skip_bad)
    ds = stage_data(cfg.dataset, data_cfg, sc)
    check_options(cfg, ds)
    twins = data_twins(ds, sc)
    model, bb_record, bb_art = stage_backbone(preset, ds, cfg.backbone_seed, sc)
    export, ex_art = stage_export(ds, model, bb_record, sc)
    scores = backbone_scores(model, ds, export, sc)
    artefacts = {"backbone": f"{bb_art.kind}/{bb_art.name}",
                 "export": f"{ex_art.kind}/{ex_art.name}"}
    meta = bb_record.get("meta", {})
    summary = meta.get("summary", {})
    training = {"train_wall_s": summary.get("train_wall_s"), "steps": summary.get("steps"),
                "precision": summary.get("precision"),
                "device": meta.get("device"), "load_avg": meta.get("load_avg"),
                "cpu_count": meta.get("cpu_count"), "cpu_share": summary.get("train_cpu_share")}
    return Shared(preset, ds, model, export, artefacts, scores, training, twins)


def scoring_context(cfg: RunConfig, shared: Shared, extractor: FeatureExtractor, n: int,
                    sc: StageContext) -> tuple[ScoringContext, np.ndarray]:
    """The real side every row of a setting is scored against (n test images, the training
    images and the memorisation threshold), and the test indices left for the reference row."""
    test = shared.ds.splits["test"]
    return make_context(test.images, test.labels, shared.ds.splits["train"].images,
                        shared.export.codes["test"], shared.export.num_codes, extractor,
                        shared.ds.label_names if cfg.condition == "label" else (),
                        n=n, seed=cfg.backbone_seed, subjects=test.subjects,
                        strata=test.labels, backbone=shared.model, store=sc.store,
                        force=sc.force_for(f"threshold|{shared.export.export_hash}|{n}", "export"),
                        device=sc.device)


def run_benchmark(cfg: RunConfig, *, progress: RichProgress | None = None,
                  sc: StageContext | None = None) -> RunResult:
    """Run (or find in the store) one prior on one dataset and write its record. Under
    torchrun (`sc.ranks`) every rank fits and samples; rank 0 alone scores and writes."""
    preset = get_preset(cfg.preset).with_precision(cfg.precision)
    check_options(cfg)  # unknown prior, extractor without its extra: before any work
    sc = sc or stage_context(cfg, progress, Ranks())
    check_precision(preset, priors.get_prior(cfg.prior), sc.device)
    shared = prepare_shared(cfg, preset, sc)
    prior = build_prior(cfg, preset, shared.export, sc.device)
    test_codes = code_set(shared.export, "test", cfg.condition == "label")
    preflight(prior, test_codes.codes, test_codes.labels)
    n = n_scored(cfg, preset, shared.ds)
    if not sc.ranks.lead:
        return follow_run(cfg, preset, prior, shared, n, sc)
    extractor = stage_extractor(cfg.extractor, shared.ds, seed=cfg.backbone_seed,
                                preset=preset.base, weights_path=cfg.fid_weights, sc=sc)
    art = run_artefact(cfg, preset, prior, shared.export, extractor.id, n)
    cached = sc.store.exists(art) and not (sc.forcing("run") and art.key not in sc.rebuilt)
    sc.ranks.share(lambda: (art, cached), tag="run")  # the others fit and sample with rank 0, or not
    if cached:
        record = sc.store.read(art, records.read)
        err_console.print(f"run: identical finished run found at {sc.store.dir(art)}; "
                          f"use --force to recompute")
        return RunResult(record, sc.store.dir(art), cached=True,
                         ceilings=stored_ceilings(cfg, sc, shared.export, extractor.id, n))
    ctx, rest = scoring_context(cfg, shared, extractor, n, sc)
    ceilings = ceiling_rows(cfg, shared, ctx, rest, sc.alone())

    def build(directory: Path) -> None:
        fitted = stage_fit(cfg, preset, prior, shared.export, sc)
        record, tensors = sample_and_score(cfg, prior, fitted, shared, ctx, n, sc)
        base = base_record(cfg, shared, ctx)
        records.writer(record | base | {"run_id": art.name, "artefacts": base["artefacts"]
                                        | {"fit": fitted["artefact"]}}, tensors)(directory)

    record, built = sc.build(art, build, records.read, stage="run", collective=True)
    return RunResult(record, sc.store.dir(art), cached=not built, ceilings=ceilings)


def follow_run(cfg: RunConfig, preset: Preset, prior: Prior, shared: Shared, n: int,
               sc: StageContext) -> RunResult:
    """A rank > 0 under torchrun: fit (or load the fit) and sample with rank 0 when it builds
    this run, then read the record rank 0 wrote (its ceiling rows are left to rank 0)."""
    art, cached = sc.ranks.share(None, tag="run")
    if cached:
        return RunResult(sc.store.read(art, records.read), sc.store.dir(art), cached=True)

    def build(_: Path) -> None:  # into a scratch folder: rank 0 writes the record
        stage_fit(cfg, preset, prior, shared.export, sc)
        sample_prior(prior, n, seed=cfg.seed, ranks=sc.ranks,
                     labels=sample_labels(n, shared.export, cfg.condition == "label"))

    record, _ = sc.build(art, build, records.read, stage="run", collective=True)
    return RunResult(record, sc.store.dir(art), cached=False)


def run_seeds(cfg: RunConfig, seeds: list[int], *,
              progress: RichProgress | None = None) -> list[RunResult]:
    """`run_benchmark` for each seed; the shared stages are built (or forced) once. Under
    torchrun the ranks run it together (bench/torchrun.py) and only rank 0 returns results
    (the others return [], so that one process reports)."""
    if not seeds:
        raise BenchError("no seeds to run; give --seed N or --seeds 0,1,2")
    check_options(cfg)
    with session(resolve_device(cfg.device), timeout_s=cfg.ddp_timeout_s) as ranks:
        if ranks.world > 1:
            check_batches(ranks.world, batch_sizes(cfg, get_preset(cfg.preset)))
        sc = stage_context(cfg, progress, ranks)
        results = [run_benchmark(dataclasses.replace(cfg, seed=s), sc=sc) for s in seeds]
    return results if ranks.lead else []


def batch_sizes(cfg: RunConfig, preset: Preset) -> dict[str, int]:
    """The global batch sizes the ranks split: the backbone's and the prior's (if it has one)."""
    sizes = {"the backbone": preset.train.batch_size}
    prior_batch = getattr(preset.prior_config(priors.get_prior(cfg.prior)), "batch_size", None)
    if isinstance(prior_batch, int):
        sizes[f"the {cfg.prior} prior's"] = prior_batch
    return sizes


def stage_context(cfg: RunConfig, progress: RichProgress | None, ranks: Ranks) -> StageContext:
    """What the stages of a run share; under torchrun only rank 0 writes or shows progress."""
    store = (open_store(cfg.out) if ranks.lead else
             Store(cfg.out, writer=False))  # rank 0 prepared the folder; these only read it
    if progress is None or not ranks.lead:
        progress = RichProgress(enabled=ranks.lead)
    return StageContext(store=store, device=ranks.place(resolve_device(cfg.device)),
                        progress=progress, force=cfg.force, force_from=cfg.force_from,
                        checkpoint_every_s=cfg.checkpoint_every_s, ranks=ranks)


def open_store(out: Path) -> Store:
    store = Store(out, say=lambda text: err_console.print(f"store: {text}")).prepare()
    removed = store.clean_staging()
    if removed:
        err_console.print(f"store: removed {removed} unfinished build(s) left by stopped runs")
    return store


def fit_prior(cfg: RunConfig, prior: Prior, export: CodeExport, sc: StageContext, *,
              checkpoint: priors.Checkpoint | None) -> tuple[dict[str, float], float]:
    """(fit summary, fit seconds, resumed parts counted) of `prior` on the train split;
    `checkpoint` None: none (ranks > 0, whose fits resume from rank 0's)."""
    conditional = cfg.condition == "label"
    t0 = time.perf_counter()
    fit_summary = prior.fit(code_set(export, "train", conditional),
                            code_set(export, "val", conditional), seed=cfg.seed,
                            progress=sc.progress,
                            **({"checkpoint": checkpoint}
                               if checkpoint is not None and priors.accepts_checkpoint(prior)
                               else {}))
    return fit_summary, fit_summary.get("train_wall_s", time.perf_counter() - t0)


FIT = "fit.json"  # a fit artefact: what the fit recorded ...
WEIGHTS = "weights.safetensors"  # ... and the prior's state dict


def write_fit(directory: Path, state: dict[str, torch.Tensor], fitted: dict[str, Any]) -> None:
    """A fit artefact's files: the prior's state dict and what the fit recorded."""
    save_tensors(directory / WEIGHTS, state)
    write_json_atomic(directory / FIT, fitted)


def stage_fit(cfg: RunConfig, preset: Preset, prior: Prior, export: CodeExport,
              sc: StageContext) -> dict[str, Any]:
    """`prior` fitted on the train split: trained (checkpointed, resumable) and stored with its
    test bits/code, or its stored weights loaded. Returns what the fit recorded. Under torchrun
    every rank trains; rank 0 measures bits/code and writes, the others load what it wrote."""
    art = fit_artefact(cfg, preset, prior, export)
    conditional = cfg.condition == "label"

    def build(directory: Path) -> None:
        before = set(sc.progress.history)
        load_before = records.load_average()
        fit_summary, fit_s = fit_prior(cfg, prior, export, sc,
                                       checkpoint=sc.checkpoint(art) if sc.ranks.lead else None)
        if not sc.ranks.lead:
            return  # a scratch folder: rank 0 writes the fit
        curves = {curve_name(k): sc.progress.curve(k) for k in sc.progress.history
                  if k not in before}
        bits = measure_bits(prior, code_set(export, "test", conditional),
                            checkpoint=sc.checkpoint(art, "bits"), progress=sc.progress)
        write_fit(directory, prior.state_dict(), {
            "prior": cfg.prior, "config": dataclasses.asdict(prior.config), "fit": fit_summary,
            "fit_s": fit_s, "bits_per_code": bits.bits, "bits_s": bits.wall_s,
            **records.machine_load(load_before),
            "num_parameters": prior.num_parameters(),
            "device": device_name(sc.device, sc.ranks.world),
            "curves": curves,
            "export_hash": export.export_hash, "seed": cfg.seed, "condition": cfg.condition,
            "versions": records.versions()})

    def load(directory: Path) -> dict[str, Any]:
        fitted = read_json(directory / FIT)
        try:
            prior.load_state_dict(load_tensors(directory / WEIGHTS))
        except (RuntimeError, KeyError) as e:
            raise ArtefactError(f"{directory} does not load into {cfg.prior!r} "
                                f"({' '.join(str(e).split())[:200]})") from None
        return fitted | {"artefact": f"{art.kind}/{art.name}"}

    fitted, built = sc.build(art, build, load, stage="fit", collective=True)
    if not built and sc.ranks.lead:
        err_console.print(f"{cfg.prior}: fitted prior found at {sc.store.dir(art)}")
    return fitted


def sample_and_score(cfg: RunConfig, prior: Prior, fitted: dict[str, Any], shared: Shared,
                     ctx: ScoringContext, n: int,
                     sc: StageContext) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The run record of a fitted prior: n samples drawn, decoded and scored."""
    export, device = shared.export, sc.device
    labels = sample_labels(n, export, cfg.condition == "label")
    sync(device)
    load_before = records.load_average()
    t0 = time.perf_counter()
    codes = sample_prior(prior, n, seed=cfg.seed, labels=labels, ranks=sc.ranks)
    images = decode_codes(shared.model, codes, device=device)
    sync(device)
    sample_s = time.perf_counter() - t0
    err_console.print(f"{cfg.prior}: fit {fitted['fit_s']:.1f}s, {n} samples in "
                      f"{sample_s:.1f}s; scoring")
    scores = score_samples(SampleSet(images, codes, labels), ctx, seed=cfg.seed)
    sync(device)
    score_s = time.perf_counter() - t0 - sample_s
    scores |= {"bits_per_code": fitted["bits_per_code"], "fit_s": fitted["fit_s"],
               "samples_per_s": n / sample_s, "num_parameters": float(fitted["num_parameters"])}
    record = {"kind": "prior", "prior": cfg.prior, "config": fitted["config"],
              "scores": scores, "fit": fitted["fit"],
              # wall seconds of what follows the fit: test bits/code (measured with the fit),
              # sampling + decoding, scores
              # (a fit migrated from a run recorded before timings has no bits_s: None)
              "timing": {"bits_s": fitted["bits_s"], "sample_s": sample_s, "score_s": score_s,
                         "after_fit_s": None if fitted["bits_s"] is None
                         else fitted["bits_s"] + sample_s + score_s,
                         # load before sampling and after scoring: was the machine shared?
                         **records.machine_load(load_before),
                         # and while it fitted (on a machine of fit_cpu_count cores)
                         "fit_load_avg": fitted.get("load_avg"),
                         "fit_cpu_count": fitted.get("cpu_count")},
              "device": device_name(device, sc.ranks.world), "fit_device": fitted["device"],
              "curves": fitted["curves"]}
    tensors = {"samples/codes": codes}
    if labels is not None:
        tensors["samples/labels"] = labels
    return record, tensors


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device, ranks: int = 1) -> str:
    """The device as records name it: 'cpu (2 threads)', 'cuda (NVIDIA H100 ...) x 8 ranks'."""
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        name = f"cpu ({torch.get_num_threads()} threads)"
    return name if ranks == 1 else f"{name} x {ranks} ranks"


def curve_name(description: str) -> str:
    """A progress task's name as a record's curve key: a resumed fit's curve under the name of
    an uninterrupted one ('fit pixelcnn (resumed at step 40)' -> 'fit pixelcnn')."""
    return re.sub(r" \(resumed at step \d+\)$", "", description)
