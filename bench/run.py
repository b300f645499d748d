"""The pipeline: data -> frozen backbone -> code export -> prior -> samples -> scores -> record.

Every stage is cached by a content key, so a second prior reuses the backbone, the export, the
feature extractor and the reference row of the first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import priors
from bench import metrics, records
from bench.data import DataConfig, ImageDataset, load_dataset
from bench.errors import ArtefactError, BenchError
from bench.extractors import build_extractor
from bench.presets import Preset, get_preset
from bench.progress import RichProgress, err_console
from bench.scoring import SampleSet, ScoringContext, make_context, score_samples
from priors import CodeSet, Prior
from vqvae import (VQVAE, CheckpointError, CodeExport, decode_codes, encode_array, load_backbone,
                   load_export, save_backbone, save_export, train_vqvae)
from vqvae.io import read_json, write_json_atomic
from vqvae.train import to_float

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
    force: bool = False  # recompute and overwrite a finished run with the same id
    skip_bad: bool = False  # skip unreadable images with a counted warning

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise BenchError(f"unknown --condition {self.condition!r}; available: "
                             f"{', '.join(CONDITIONS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BenchError(f"unknown --device {self.device!r}; available: auto, cpu, cuda")
        if self.n_samples < 0:
            raise BenchError(f"--n-samples must be >= 0, got {self.n_samples}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for, but torch sees no CUDA device; "
                         "use --device cpu or auto")
    return torch.device(name)


def content_key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def prepare_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"cannot create or write the output folder {out}: "
                         f"{e.strerror or e}") from None
    return out


# --- stages -----------------------------------------------------------------------------------


def stage_data(cfg: RunConfig, preset: Preset, progress: RichProgress) -> ImageDataset:
    data_cfg = DataConfig(resolution=preset.resolution, seed=cfg.backbone_seed,
                          mni_sizes=preset.mni_sizes, skip_bad=cfg.skip_bad)
    ds = load_dataset(cfg.dataset, data_cfg, cache_dir=cfg.out / ".cache" / "data",
                      progress=progress)
    for note in ds.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    return ds


def backbone_train_images(ds: ImageDataset, preset: Preset, seed: int) -> np.ndarray:
    images = ds.splits["train"].images
    if preset.max_train_images and len(images) > preset.max_train_images:
        pick = np.random.default_rng(seed).choice(len(images), preset.max_train_images,
                                                  replace=False)
        return np.asarray(images[np.sort(pick)])
    return np.asarray(images)


def stage_backbone(cfg: RunConfig, preset: Preset, ds: ImageDataset, device: torch.device,
                   progress: RichProgress) -> tuple[VQVAE, dict[str, Any]]:
    key = content_key({"data": ds.fingerprint, "vqvae": dataclasses.asdict(preset.vqvae),
                       "train": dataclasses.asdict(preset.train), "seed": cfg.backbone_seed,
                       "max_train_images": preset.max_train_images})
    directory = cfg.out / "backbones" / key[:16]
    if (directory / "backbone.json").exists():
        try:
            model, record = load_backbone(directory)
            err_console.print(f"backbone: cached {directory} ({record['hash'][:12]})")
            return model, record
        except CheckpointError as e:
            if not cfg.force:
                raise ArtefactError(f"{e}; rerun with --force to retrain it") from None
    torch.manual_seed(cfg.backbone_seed)
    model = VQVAE(preset.vqvae)
    train_cfg = dataclasses.replace(preset.train, seed=cfg.backbone_seed)
    images = backbone_train_images(ds, preset, cfg.backbone_seed)
    summary = train_vqvae(model, images, train_cfg, device=device, progress=progress)
    meta = {"data_fingerprint": ds.fingerprint, "dataset": ds.spec, "image_size": preset.resolution,
            "train": dataclasses.asdict(train_cfg), "summary": summary, "device": str(device),
            "curve": progress.curve("backbone")}
    digest = save_backbone(model.cpu(), directory, meta)
    err_console.print(f"backbone: trained in {summary['train_wall_s']:.0f}s -> {directory} "
                      f"({digest[:12]})")
    return load_backbone(directory)


def export_dir(cfg: RunConfig, backbone_hash: str) -> Path:
    """Where the codes of one backbone live, with what is cached per export beside them."""
    return cfg.out / "exports" / backbone_hash[:16]


def stage_export(cfg: RunConfig, ds: ImageDataset, model: VQVAE, record: dict[str, Any],
                 device: torch.device) -> CodeExport:
    directory = export_dir(cfg, record["hash"])
    if (directory / "manifest.json").exists():
        try:
            return load_export(directory, backbone=record["hash"])
        except CheckpointError as e:
            if not cfg.force:
                raise ArtefactError(f"{e}; rerun with --force to re-export") from None
    codes = {s: encode_array(model, sp.images, device=device) for s, sp in ds.splits.items()}
    labels = {s: torch.from_numpy(np.asarray(sp.labels)) for s, sp in ds.splits.items()
              if sp.labels is not None}
    meta = {"dataset": ds.spec, "data_fingerprint": ds.fingerprint,
            "label_names": list(ds.label_names), "image_size": ds.config.resolution}
    export = save_export(directory, codes=codes, labels=labels, codebook=model.codebook,
                         backbone=record["hash"], meta=meta)
    err_console.print(f"codes: exported {export.manifest['counts']} grids of {export.grid} "
                      f"-> {directory}")
    return export


def code_set(export: CodeExport, split: str, conditional: bool) -> CodeSet:
    labels = export.labels.get(split) if conditional else None
    return CodeSet(codes=export.codes[split], num_codes=export.num_codes, labels=labels)


def build_prior(cfg: RunConfig, export: CodeExport, device: torch.device) -> Prior:
    cls = priors.get_prior(cfg.prior)
    conditional = cfg.condition == "label"
    if conditional and not export.label_names:
        raise BenchError(f"--condition label needs a labelled dataset; {cfg.dataset!r} has no "
                         f"labels (labelled: adni:PATH)")
    if conditional and not cls.conditional:
        conditional_priors = [n for n in priors.available_priors()
                              if priors.get_prior(n).conditional]
        raise BenchError(f"prior {cfg.prior!r} is not class-conditional; conditional priors: "
                         f"{', '.join(conditional_priors)}")
    return cls(get_preset(cfg.preset).prior_config(cls), num_codes=export.num_codes, grid=export.grid,
               num_classes=len(export.label_names) if conditional else 0,
               codebook=export.codebook, device=device)


def run_id(cfg: RunConfig, prior: Prior, export: CodeExport, extractor_id: str,
           n_samples: int) -> str:
    return content_key({"prior": cfg.prior, "config": dataclasses.asdict(prior.config),
                        "export": export.export_hash, "seed": cfg.seed, "condition": cfg.condition,
                        "extractor": extractor_id, "n_samples": n_samples, "preset": cfg.preset})[:12]


def sample_labels(n: int, export: CodeExport, conditional: bool) -> torch.Tensor | None:
    """Balanced class labels for conditional sampling, None otherwise."""
    if not conditional:
        return None
    return torch.arange(n) % len(export.label_names)


SAMPLE_BATCH = 256  # grids sampled at once by `bench run` (`bench perf` times this batch too)


def sample_prior(prior: Prior, n: int, *, seed: int, labels: torch.Tensor | None,
                 batch: int = SAMPLE_BATCH) -> torch.Tensor:
    gen = torch.Generator(device=prior.device).manual_seed(seed)
    chunks = []
    for i in range(0, n, batch):
        lab = None if labels is None else labels[i:i + batch].to(prior.device)
        chunks.append(prior.sample(min(batch, n - i), generator=gen, labels=lab).cpu())
    return torch.cat(chunks)


def test_bits_per_code(prior: Prior, test: CodeSet, batch: int = 256) -> float | None:
    if not prior.has_likelihood:
        return None
    lp = []
    with torch.no_grad():
        for i in range(0, len(test), batch):
            lab = None if test.labels is None else test.labels[i:i + batch].to(prior.device)
            lp.append(prior.log_prob(test.codes[i:i + batch].to(prior.device), lab).cpu())
    return metrics.bits_per_code(torch.cat(lp), test.grid)


# --- orchestration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    record: dict[str, Any]
    directory: Path
    cached: bool  # True: an identical finished run was found and nothing was recomputed


def stage_reference(cfg: RunConfig, export: CodeExport, model: VQVAE, ds: ImageDataset,
                    ctx: ScoringContext, rest: np.ndarray, device: torch.device) -> None:
    """The backbone's ceiling: sample metrics of its reconstructions of held-out real images.
    A conditional run's reference also has per-class scores, so it is a record of its own (the
    unconditional key is unchanged from before conditioning existed: old results stay valid)."""
    fields = {"export": export.export_hash, "extractor": ctx.extractor.id,
              "n": int(ctx.real.shape[0]), "seed": cfg.seed}
    if cfg.condition != "none":
        fields["condition"] = cfg.condition
    key = content_key(fields)[:12]
    directory = cfg.out / "runs" / f"reference-{key}"
    if records.exists(directory) and not cfg.force:
        return
    test = ds.splits["test"]
    x = to_float(test.images[rest], torch.device("cpu"))
    codes = export.codes["test"][torch.from_numpy(rest)]
    recon = decode_codes(model, codes, device=device)
    labels = None if test.labels is None else torch.from_numpy(np.asarray(test.labels)[rest])
    scores = score_samples(SampleSet(recon, codes, labels), ctx, seed=cfg.seed)
    scores["recon_ssim"] = float(metrics.ssim(recon, x).mean())
    scores["recon_psnr"] = float(metrics.psnr(recon, x).mean())
    records.write(directory, base_record(cfg, export, ctx) | {
        "kind": "reference", "prior": "reference (recon)", "run_id": key, "scores": scores,
        "device": device_name(device)}, tensors={"samples/codes": codes}, force=True)


def base_record(cfg: RunConfig, export: CodeExport, ctx: ScoringContext) -> dict[str, Any]:
    return {"dataset": cfg.dataset, "preset": cfg.preset, "seed": cfg.seed,
            "backbone_hash": export.backbone_hash, "export_hash": export.export_hash,
            "num_codes": export.num_codes, "grid": list(export.grid),
            "extractor": {"name": ctx.extractor.name, "id": ctx.extractor.id},
            "condition": cfg.condition, "versions": records.versions()}


def backbone_scores(cfg: RunConfig, model: VQVAE, ds: ImageDataset, export: CodeExport,
                    device: torch.device) -> dict[str, float]:
    """Recon SSIM / PSNR over the whole test split and code usage over each split: computed
    once per export (it decodes the whole test split) and cached beside it."""
    path = export_dir(cfg, export.backbone_hash) / "backbone_scores.json"
    if path.is_file() and not cfg.force:
        return read_json(path)
    scores = _backbone_scores(model, ds, export, device)
    write_json_atomic(path, scores)
    return scores


def _backbone_scores(model: VQVAE, ds: ImageDataset, export: CodeExport,
                     device: torch.device) -> dict[str, float]:
    x = to_float(ds.splits["test"].images, torch.device("cpu"))
    recon = decode_codes(model, export.codes["test"], device=device)
    out = {"recon_ssim": float(metrics.ssim(recon, x).mean()),
           "recon_psnr": float(metrics.psnr(recon, x).mean())}
    for split in ("train", "test"):
        counts = metrics.code_histogram(export.codes[split], export.num_codes)
        out[f"{split}_distinct_codes"] = float(metrics.distinct_codes(counts))
        out[f"{split}_code_perplexity"] = metrics.perplexity(counts)
    return out


def run_benchmark(cfg: RunConfig, *, progress: RichProgress | None = None) -> RunResult:
    """Run (or find in the cache) one prior on one dataset and write its record."""
    progress = progress or RichProgress()
    preset = get_preset(cfg.preset)
    priors.get_prior(cfg.prior)  # fail fast on an unknown name, before any work
    prepare_out(cfg.out)
    device = resolve_device(cfg.device)
    ds = stage_data(cfg, preset, progress)
    model, bb_record = stage_backbone(cfg, preset, ds, device, progress)
    export = stage_export(cfg, ds, model, bb_record, device)
    prior = build_prior(cfg, export, device)
    extractor = build_extractor(cfg.extractor, train_images=np.asarray(ds.splits["train"].images),
                                cache_dir=cfg.out / ".cache" / "extractors", device=device,
                                seed=cfg.backbone_seed, preset=preset.base, progress=progress,
                                weights_path=cfg.fid_weights)
    n = min(cfg.n_samples or preset.n_samples, len(ds.splits["test"]) // 2)
    if n < 2:
        raise BenchError(f"the test split of {cfg.dataset!r} has {len(ds.splits['test'])} images; "
                         f"scoring needs at least 4")
    rid = run_id(cfg, prior, export, extractor.id, n)
    directory = cfg.out / "runs" / f"{cfg.prior}-{rid}"
    if records.exists(directory) and not cfg.force:
        err_console.print(f"run: identical finished run found at {directory}; "
                          f"use --force to recompute")
        return RunResult(records.read(directory), directory, cached=True)
    ctx, rest = make_context(ds.splits["test"].images, ds.splits["test"].labels,
                             ds.splits["train"].images, export.codes["test"], export.num_codes,
                             extractor, ds.label_names if cfg.condition == "label" else (),
                             n=n, seed=cfg.backbone_seed,
                             cache_dir=export_dir(cfg, export.backbone_hash))
    stage_reference(cfg, export, model, ds, ctx, rest, device)
    record, sampled = fit_and_score(cfg, prior, export, model, ctx, n, device, progress)
    record |= base_record(cfg, export, ctx) | {"run_id": rid, "kind": "prior",
                                               "backbone": backbone_scores(cfg, model, ds, export,
                                                                           device)}
    tensors = {f"prior/{k}": v for k, v in prior.state_dict().items()} | {"samples/codes": sampled}
    if cfg.condition == "label":
        tensors["samples/labels"] = sample_labels(len(sampled), export, True)
    records.write(directory, record, tensors=tensors, force=cfg.force)
    return RunResult(record, directory, cached=False)


def fit_and_score(cfg: RunConfig, prior: Prior, export: CodeExport, model: VQVAE,
                  ctx: ScoringContext, n: int, device: torch.device,
                  progress: RichProgress) -> tuple[dict[str, Any], torch.Tensor]:
    conditional = cfg.condition == "label"
    torch.manual_seed(cfg.seed)
    before = set(progress.history)
    t0 = time.perf_counter()
    fit_summary = prior.fit(code_set(export, "train", conditional),
                            code_set(export, "val", conditional), seed=cfg.seed, progress=progress)
    fit_s = time.perf_counter() - t0
    bits = test_bits_per_code(prior, code_set(export, "test", conditional))
    labels = sample_labels(n, export, conditional)
    sync(device)
    t0 = time.perf_counter()
    codes = sample_prior(prior, n, seed=cfg.seed, labels=labels)
    images = decode_codes(model, codes, device=device)
    sync(device)
    sample_s = time.perf_counter() - t0
    err_console.print(f"{cfg.prior}: fit {fit_s:.1f}s, {n} samples in {sample_s:.1f}s; scoring")
    scores = score_samples(SampleSet(images, codes, labels), ctx, seed=cfg.seed)
    scores |= {"bits_per_code": bits, "fit_s": fit_s, "samples_per_s": n / sample_s,
               "num_parameters": float(prior.num_parameters())}
    return {"prior": cfg.prior, "config": dataclasses.asdict(prior.config), "scores": scores,
            "fit": fit_summary, "device": device_name(device),
            "curves": {k: progress.curve(k) for k in progress.history if k not in before}}, codes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
