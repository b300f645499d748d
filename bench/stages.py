"""The shared stages of a run, each one artefact of the store: data, backbone, code export,
backbone scores, feature extractor. Every prior, seed and process that needs a stage builds it
once (under its lock) and reuses it; `force` rebuilds it once per process."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench import metrics, records
from bench.data import DataConfig, ImageDataset, load_dataset
from bench.data.inspect import TWIN_RMS, TWIN_SIDE, Twins, find_twins, twin_notes
from bench.errors import ArtefactError, BenchError
from bench.extractors import FeatureExtractor, build_extractor
from bench.presets import Preset
from bench.progress import RichProgress, err_console
from bench.store import Artefact, Store, read_json, write_json_atomic
from bench.torchrun import Ranks
from priors import Prior
from vqvae import (VQVAE, CheckpointError, CodeExport, TrainConfig, decode_codes, encode_array,
                   load_backbone, load_export, save_backbone, save_export, train_vqvae)
from vqvae.train import resolve_precision, to_float


# The stages `--force-from` names, in build order: each stage's artefacts depend only on those of
# earlier stages (data: the decoded cache, twins and the feature extractor; backbone: its weights
# and reconstruction scores; export: the codes, the memorisation threshold and the ceiling rows;
# fit: the prior's weights and test bits/code; run: its samples, scores and record).
STAGES = ("data", "backbone", "export", "fit", "run")


@dataclasses.dataclass
class StageContext:
    """What every stage of one process shares: the store, the device, progress, and which
    artefacts `--force` has already rebuilt in this process (so a multi-seed run rebuilds the
    shared stages once, not once per seed) and, under torchrun, this process's `ranks`
    (bench/torchrun.py: rank 0 builds and writes, the others read what it committed)."""

    store: Store
    device: torch.device
    progress: RichProgress
    force: bool = False  # rebuild every stage (`--force`)
    force_from: str | None = None  # rebuild this stage of STAGES and every later one
    checkpoint_every_s: float = 60.0  # training checkpoints: seconds apart (0: every step)
    rebuilt: set[str] = dataclasses.field(default_factory=set)
    ranks: Ranks = Ranks()  # torchrun's ranks of this run (one process: Ranks())

    def checkpoint(self, art: Artefact, name: str = "checkpoint"):
        return self.store.checkpoint(art, every_s=self.checkpoint_every_s, name=name)

    def forcing(self, stage: str) -> bool:
        """Whether `--force` / `--force-from` asks to rebuild `stage` (one of STAGES)."""
        return self.force or (self.force_from is not None
                              and STAGES.index(stage) >= STAGES.index(self.force_from))

    def build(self, art: Artefact, build: Callable[[Path], None], load: Callable[[Path], Any], *,
              stage: str, collective: bool = False):
        """`art` (made by `stage`, one of STAGES) from the store, built first if needed. Under
        torchrun rank 0 builds and commits, then the others read it; a `collective` build
        (training in DDP) runs on every rank, the others' output going to a scratch folder that
        is thrown away."""
        force = self.forcing(stage) and art.key not in self.rebuilt
        if collective and self.ranks.world > 1:
            # rank 0 decides for all; building then means building even if another process
            # commits the same artefact meanwhile (the ranks have started training together)
            force = self.ranks.share(lambda: force or not self.store.exists(art),
                                     tag=f"build? {art.label}")
            if force and not self.ranks.lead:
                with tempfile.TemporaryDirectory(prefix=f"bench-rank{self.ranks.rank}-") as tmp:
                    build(Path(tmp))
        value, built = self.ranks.lead_first(
            lambda: self.store.get_or_build(art, build, load, force=force), tag=art.label)
        if built:
            self.rebuilt.add(art.key)
        return value, built

    def alone(self) -> "StageContext":
        """This context for what rank 0 builds by itself, no other rank waiting on it (one
        process: the same); `rebuilt` stays shared."""
        return dataclasses.replace(self, ranks=Ranks())

    def force_for(self, what: str, stage: str) -> bool:
        """Whether an artefact of `stage` that builds through another module (named by `what`,
        unique per input) must rebuild now: the first time in this process that `--force` /
        `--force-from` asks for it."""
        force = self.forcing(stage) and what not in self.rebuilt
        self.rebuilt.add(what)
        return force


def stage_data(spec: str, data_cfg: DataConfig, sc: StageContext) -> ImageDataset:
    force = sc.force_for(f"data|{spec}|{data_cfg}", "data")
    ds = sc.ranks.lead_first(lambda: load_dataset(spec, data_cfg, store=sc.store, force=force,
                                                  progress=sc.progress), tag=f"data {spec}")
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


def backbone_artefact(preset: Preset, ds: ImageDataset, seed: int,
                      device: torch.device) -> Artefact:
    """The key names the training precision as resolved on `device` (auto: bf16 or fp32), so
    backbones trained at different precisions are never mixed, and auto and its value agree.

    A change to `train_vqvae` that trains other weights from the same key must change the key.
    Channels-last training came with the named precision: keys without one were trained NCHW
    (a fresh fp32 ADNI quick backbone is d8a80747fb6e, recon SSIM 0.899; NCHW trained
    18fa6a8cae7c, 0.901), so fp32 is named too and the two never mix."""
    train = resolved_train(preset, device)
    return Artefact.of("backbones", {
        "data": ds.fingerprint, "vqvae": dataclasses.asdict(preset.vqvae),
        "train": dataclasses.asdict(train), "seed": seed,
        "max_train_images": preset.max_train_images})


def precision_keyed(fields: dict[str, Any], resolved: str) -> dict[str, Any]:
    """A config's fields as a cache key holds them: the configured precision (auto, which means
    different things on different devices) replaced by the `resolved` one."""
    return {k: v for k, v in fields.items() if k != "precision"} | {"precision": resolved}


def resolved_train(preset: Preset, device: torch.device) -> TrainConfig:
    """The preset's backbone training config with its precision as it runs on `device`."""
    return dataclasses.replace(preset.train, precision=resolved_precision(
        "backbone", preset.train.precision, device))


def resolved_precision(what: str, precision: str, device: torch.device) -> str:
    """'fp32' or 'bf16' for `what`'s configured precision on `device`; bf16 on a device
    without native bf16 is a one-line error."""
    try:
        return resolve_precision(precision, device)
    except ValueError as e:
        raise BenchError(f"{what}: {e}") from None


def check_precision(preset: Preset, prior: type[Prior], device: torch.device) -> None:
    """Before any work: the backbone's and the prior's precisions can run on `device`."""
    resolved_precision("backbone", preset.train.precision, device)
    config = preset.prior_config(prior)
    if hasattr(config, "precision"):
        resolved_precision(f"prior {prior.name}", config.precision, device)


def stage_backbone(preset: Preset, ds: ImageDataset, seed: int,
                   sc: StageContext) -> tuple[VQVAE, dict[str, Any], Artefact]:
    art = backbone_artefact(preset, ds, seed, sc.device)

    def build(directory: Path) -> None:
        train_cfg = dataclasses.replace(resolved_train(preset, sc.device), seed=seed)
        checkpoint = sc.checkpoint(art)
        model = VQVAE(preset.vqvae, seed=seed)  # train_vqvae seeds init, order and restarts
        load_before = records.load_average()
        summary = train_vqvae(model, backbone_train_images(ds, preset, seed), train_cfg,
                              device=sc.device, progress=sc.progress,
                              checkpoint=checkpoint)
        meta = {"data_fingerprint": ds.fingerprint, "dataset": ds.spec,
                "image_size": preset.resolution, "train": dataclasses.asdict(train_cfg),
                "summary": summary, "device": str(sc.device),
                **records.machine_load(load_before),  # was the machine shared while it trained?
                "curve": sc.progress.curve(next((k for k in sc.progress.history
                                                 if k.startswith("backbone")), "backbone"))}
        digest = save_backbone(model.cpu(), directory, meta)
        err_console.print(f"backbone: trained in {summary['train_wall_s']:.0f}s ({digest[:12]})")

    (model, record), built = sc.build(art, build, _load_backbone, stage="backbone",
                                      collective=True)
    if not built:
        err_console.print(f"backbone: cached {sc.store.dir(art)} ({record['hash'][:12]})")
    return model, record, art


def _load_backbone(directory: Path) -> tuple[VQVAE, dict[str, Any]]:
    try:
        return load_backbone(directory)
    except CheckpointError as e:
        raise ArtefactError(f"{e}; run the same command again with --force to rebuild it") from None


def export_artefact(backbone_hash: str, data_fingerprint: str, device: torch.device) -> Artefact:
    """Where the codes of one backbone on one dataset live: keyed by both, and by how they were
    encoded where that differs from fp32 (CUDA encodes under bf16 autocast: a near-tie in code
    assignment can fall the other way, so a GPU's export is not a CPU's). The fp32 key names no
    encoding, as every export's key did before CUDA exports were told apart."""
    key = {"backbone": backbone_hash, "data": data_fingerprint}
    if device.type == "cuda":
        key["encode"] = "bf16-autocast"
    return Artefact.of("exports", key)


def stage_export(ds: ImageDataset, model: VQVAE, record: dict[str, Any],
                 sc: StageContext) -> tuple[CodeExport, Artefact]:
    """The codes of every split: keyed by the backbone AND the data of every split (and the
    encoding's precision where it is not fp32: `export_artefact`)."""
    art = export_artefact(record["hash"], ds.fingerprint, sc.device)

    def build(directory: Path) -> None:
        codes = {s: encode_array(model, sp.images, device=sc.device) for s, sp in ds.splits.items()}
        labels = {s: torch.from_numpy(np.asarray(sp.labels)) for s, sp in ds.splits.items()
                  if sp.labels is not None}
        meta = {"dataset": ds.spec, "data_fingerprint": ds.fingerprint,
                "label_names": list(ds.label_names), "image_size": ds.config.resolution,
                "encoded_on": sc.device.type}
        export = save_export(directory, codes=codes, labels=labels, codebook=model.codebook,
                             backbone=record["hash"], meta=meta)
        err_console.print(f"codes: exported {export.manifest['counts']} grids of {export.grid}")

    def load(directory: Path) -> CodeExport:
        try:
            return load_export(directory, backbone=record["hash"])
        except CheckpointError as e:
            raise ArtefactError(f"{e}; run the same command again with --force") from None

    export, _ = sc.build(art, build, load, stage="export")
    return export, art


def data_twins(ds: ImageDataset, sc: StageContext) -> dict[str, int]:
    """Subjects of each split that are twins of a training subject (near-identical scans
    under two IDs: `find_twins`), found once per dataset and stored; a note for each held-out
    split with any, since its scores can reward a prior that copies training grids."""
    art = Artefact.of("scores", {"what": "twins", "data": ds.fingerprint, "rms": TWIN_RMS,
                                 "side": TWIN_SIDE}, prefix="twins-")

    def build(directory: Path) -> None:
        write_json_atomic(directory / "twins.json",
                          {"splits": [dataclasses.asdict(t) for t in find_twins(ds)]})

    if not sc.store.writer and sc.ranks.world == 1 and not sc.store.exists(art):
        # a read-only store outside torchrun (scripts on a folder of older runs): not kept
        twins = find_twins(ds)
    else:
        stored, _ = sc.build(art, build, lambda d: read_json(d / "twins.json"), stage="data")
        twins = [Twins(**t) for t in stored["splits"]]
    if sc.ranks.lead:
        for note in twin_notes(twins):
            err_console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    return {t.split: t.twins for t in twins}


def backbone_scores(model: VQVAE, ds: ImageDataset, export: CodeExport,
                    sc: StageContext) -> dict[str, float]:
    """Recon SSIM / PSNR over the whole test split and code usage over each split: computed
    once per export (it decodes the whole test split) and stored."""
    art = Artefact.of("scores", {"what": "backbone", "export": export.export_hash,
                                 "data": ds.fingerprint}, prefix="backbone-")

    def build(directory: Path) -> None:
        x = to_float(ds.splits["test"].images, torch.device("cpu"))
        recon = decode_codes(model, export.codes["test"], device=sc.device)
        out = {"recon_ssim": float(metrics.ssim(recon, x).mean()),
               "recon_psnr": float(metrics.psnr(recon, x).mean()), "num_codes": export.num_codes}
        for split in ("train", "test"):
            counts = metrics.code_histogram(export.codes[split], export.num_codes)
            out[f"{split}_distinct_codes"] = float(metrics.distinct_codes(counts))
            out[f"{split}_code_perplexity"] = metrics.perplexity(counts)
        if len(x) >= 2:
            spread = metrics.spread_ratios(recon, x)
            out["recon_spread"] = min(spread.values())
            out["degenerate"] = metrics.degenerate_reconstruction(spread,
                                                               int(out["test_distinct_codes"]))
        write_json_atomic(directory / "scores.json", out)

    scores, _ = sc.build(art, build, lambda d: read_json(d / "scores.json"), stage="backbone")
    if scores.get("degenerate"):
        err_console.print(f"[red]warning:[/] the backbone's reconstructions are degenerate "
                          f"({scores['degenerate']}): every score of this setting compares "
                          f"near-constant images. Train another: a preset file (--preset FILE.toml) "
                          f"with a lower [train] lr")
    return scores


def stage_extractor(name: str, ds: ImageDataset, *, seed: int, preset: str,
                    weights_path: Path | None, sc: StageContext) -> FeatureExtractor:
    stage = f"extractor|{name}|{ds.fingerprint}|{seed}|{preset}"
    return build_extractor(name, train_images=np.asarray(ds.splits["train"].images),
                           store=sc.store, device=sc.device, seed=seed, preset=preset,
                           progress=sc.progress, weights_path=weights_path,
                           force=sc.force_for(stage, "data"))
