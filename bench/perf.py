"""`bench perf`: how well the benchmark uses the machine it runs on.

Sections (each a dict in the report, all times wall clock on one device, in one process):
  backbone  training images/s of the real loop (`train_vqvae`), FLOPs per step counted exactly
            (FlopCounterMode over one forward+backward) and their rate as a share of the fp32
            matmul peak measured in the same run
  sampling  cached vs naive sampling of every registered autoregressive prior at several grid
            sides (naive timed on the first positions within a budget, then extrapolated)
  data      dataset loading, cold (decode into a fresh cache) vs warm
  features  feature-extraction images/s of the `mri` extractor
  peer      our backbone against a peer implementation at an equal wall-clock budget
  precision training steps/s in fp32 and bf16 autocast side by side, backbone and network
            priors (`bench.perf_precision`)
  scoring   nearest-SSIM scores of a run (memorisation threshold and share, NN-SSIM): the
            bounded exact search against scoring every pair (`bench.perf_scoring`)
  bits      the test bits/code after a fit, per network prior with a likelihood: FLOPs per grid,
            grids/s in fp32 (and bf16), the seconds for the dataset's test split at that rate
            and at the matmul peak (`bench.perf_bits`)
The machine load average is recorded around every section: timings on a shared box are noisy.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import priors
from bench.data import DataConfig, ImageDataset, load_dataset
from bench.extractors import build_extractor
from bench.peers import PEERS, peer_module, race_peer
from bench.perf_bits import measure_test_bits, untrained_prior, with_floors
from bench.perf_precision import check_prior_names, measure_precision
from bench.perf_scoring import measure_scoring
from bench.presets import Preset, get_preset
from bench.run import device_name, resolve_device
from bench.sampling import SAMPLE_BATCH, bits_batch
from bench.store import prepare_out
from bench.timing import forward_seconds, measure_loading, sampling_speed, timed
from priors import NullProgress, Progress
from priors.autoregressive import AutoregressivePrior
from vqvae import VQVAE, TrainConfig, train_vqvae
from bench.store import write_json_atomic
from trainkit import native_bf16_cpu
from vqvae.train import to_float

SECTIONS = ("backbone", "sampling", "data", "features", "peer", "scoring", "precision", "bits")
DEFAULT_SECTIONS = ("backbone", "precision", "sampling", "data", "features", "scoring")
FORMAT = 1  # bump when a field changes meaning


@dataclass(frozen=True)
class PerfSizes:
    """How much work each measurement does; one per preset, overridable field by field."""

    matmul_n: int  # side of the square fp32 matmul of the peak; 0 = by device (cpu 2048, cuda 8192)
    matmul_s: float  # s, length of the timed matmul loop
    backbone_steps: int  # timed training steps (after two untimed warm-up steps)
    grids: tuple[int, ...]  # code grid sides (h = w) sampled n_grids at a time
    n_grids: int  # grids sampled together in the grid sweep (small: the per-op overhead regime)
    run_grids: tuple[int, ...]  # sides also sampled run_batch at a time; () = none
    run_batch: int  # grids sampled together by `bench run` (bench.sampling.SAMPLE_BATCH)
    max_naive_s: float  # s, budget of the naive sampling timing per prior and grid
    n_feature_images: int  # test images pushed through the feature extractor
    peer_budget_s: float  # s, training budget of each backbone in the peer race
    score_queries: int = 500  # real test images (and sample stand-ins) of the scoring section
    score_refs: int = 4000  # training images they are compared against
    brute_queries: int = 25  # queries scored against every reference to time all pairs
    precision_steps: int = 3  # training steps per run of the precision section
    precision_rounds: int = 5  # timed rounds (fp32 run, bf16 run) after one untimed
    peer_test_images: int = 1000  # test images the peer race scores (a seeded subset)
    bits_grids: int = 128  # random grids each bits/code run scores, bench run's batch at a time
    bits_rounds: int = 2  # timed rounds (fp32 run, bf16 run) after one untimed

    def __post_init__(self) -> None:
        if self.matmul_n < 0:
            raise ValueError(f"matmul_n must be >= 0, got {self.matmul_n}")
        for name in ("backbone_steps", "n_grids", "run_batch", "n_feature_images",
                     "score_queries", "score_refs", "brute_queries", "precision_steps",
                     "precision_rounds", "peer_test_images", "bits_grids", "bits_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("matmul_s", "max_naive_s", "peer_budget_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")
        if not self.grids or min(self.grids) < 1:
            raise ValueError(f"grids must be positive sides like (16, 32, 64), got {self.grids}")
        if self.run_grids and min(self.run_grids) < 1:
            raise ValueError(f"run_grids must be positive sides like (16, 32), got {self.run_grids}")

    def sampling_cases(self) -> list[tuple[int, int]]:
        """(side, n) pairs the sampling section measures, in order."""
        return ([(side, self.n_grids) for side in self.grids]
                + [(side, self.run_batch) for side in self.run_grids])


def perf_sizes(preset: str) -> PerfSizes:
    """By a preset's base: tiny: the tests, seconds. quick, standard: minutes on 2 CPU cores.
    full: a GPU."""
    match get_preset(preset).base:
        case "tiny":
            return PerfSizes(matmul_n=256, matmul_s=0.05, backbone_steps=2, grids=(4,),
                             n_grids=2, run_grids=(3,), run_batch=5, max_naive_s=0.1,
                             n_feature_images=32, peer_budget_s=0.5, score_queries=6,
                             score_refs=20, brute_queries=2, precision_steps=2,
                             precision_rounds=1, bits_grids=3, bits_rounds=1)
        case "quick":
            return PerfSizes(matmul_n=0, matmul_s=2.0, backbone_steps=30, grids=(16, 32, 64),
                             n_grids=8, run_grids=(16, 32), run_batch=SAMPLE_BATCH,
                             max_naive_s=5.0, n_feature_images=500, peer_budget_s=60.0,
                             precision_steps=24, precision_rounds=3)
        case "standard":
            return PerfSizes(matmul_n=0, matmul_s=2.0, backbone_steps=20, grids=(16, 32, 64),
                             n_grids=8, run_grids=(32,), run_batch=SAMPLE_BATCH,
                             max_naive_s=5.0, n_feature_images=500, peer_budget_s=120.0,
                             precision_steps=6, precision_rounds=3)
        case "full":
            return PerfSizes(matmul_n=0, matmul_s=3.0, backbone_steps=50, grids=(16, 32, 64),
                             n_grids=64, run_grids=(32, 64), run_batch=SAMPLE_BATCH,
                             max_naive_s=20.0, n_feature_images=4000, peer_budget_s=300.0)
    raise AssertionError(preset)


@dataclass(frozen=True)
class PerfConfig:
    preset: str = "quick"  # built-in name or .toml path: backbone, data sizes and PerfSizes
    device: str = "auto"  # auto | cpu | cuda
    sections: tuple[str, ...] = DEFAULT_SECTIONS  # subset of SECTIONS, run in that order
    dataset: str = "mni"  # dataset spec for data loading, backbone, features and peer images
    peer: str = "monai"  # which peer the "peer" section races (bench.peers.PEERS)
    precision_priors: tuple[str, ...] = ("pixelcnn",)  # network priors the precision section times
    sizes: PerfSizes | None = None  # None = perf_sizes(preset)
    threads: int = 0  # torch intra-op threads during the run, restored after; 0 = leave as is
    seed: int = 0  # model init, batch order, sampling
    out: Path | None = None  # JSON report; None = results_dir / perf-<device>.json
    results_dir: Path = Path("results")  # where the default report goes
    cache_dir: Path | None = None  # data / extractor cache; None = results_dir / .cache

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be one of auto, cpu, cuda, got {self.device!r}")
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections or len(set(self.sections)) != len(self.sections):
            raise ValueError(f"sections must be distinct names from {', '.join(SECTIONS)}, "
                             f"got {','.join(self.sections) or '(none)'}")
        if self.peer not in PEERS:
            raise ValueError(f"peer must be one of {', '.join(PEERS)}, got {self.peer!r}")
        if self.out is not None and self.out.is_dir():
            raise ValueError(f"out must be a JSON file path, got the folder {self.out}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        check_prior_names(self.precision_priors)

    @property
    def resolved_sizes(self) -> PerfSizes:
        return self.sizes or perf_sizes(self.preset)

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.results_dir / ".cache"


def parse_sections(text: str, peer: str | None) -> tuple[str, ...]:
    """'backbone,data' -> ('backbone', 'data'); a --peer adds the 'peer' section."""
    sections = tuple(s.strip() for s in text.split(",") if s.strip())
    return sections + (("peer",) if peer and "peer" not in sections else ())


# --- measurements -------------------------------------------------------------------------


def matmul_peak(device: torch.device, *, n: int, seconds: float,
                dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Best and median FLOP/s of an n x n matmul repeated for about `seconds` (>= 3 calls)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g, device=device, dtype=dtype)
    timed(lambda: torch.matmul(a, b), device)  # warm-up (allocator, kernel selection, threads)
    rates, start = [], time.perf_counter()
    while len(rates) < 3 or time.perf_counter() - start < seconds:
        rates.append(2 * n**3 / timed(lambda: torch.matmul(a, b), device)[0])
    return {"n": float(n), "calls": float(len(rates)), "best_flops_per_s": max(rates),
            "median_flops_per_s": float(np.median(rates))}


def train_step_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of `step()` (returning a loss) plus its backward, as counted by FlopCounterMode
    (matmuls and convolutions; elementwise ops and the optimiser update are not counted)."""
    with FlopCounterMode(display=False) as counter:
        step().backward()
    return int(counter.get_total_flops())


def _images(ds: ImageDataset, split: str, n: int) -> np.ndarray:
    return np.array(ds.splits[split].images[:n])  # (n, H, W) uint8, a writable copy


def backbone_flops(preset: Preset, device: torch.device, batch: torch.Tensor) -> int:
    """FLOPs of one training step of a fresh backbone on `batch` (B, 1, H, W)."""
    model = VQVAE(preset.vqvae).to(device).train()

    def step() -> torch.Tensor:
        x_hat, vq_loss, _ = model(batch, torch.Generator())  # restarts drawn off the global RNG
        return torch.nn.functional.mse_loss(x_hat, batch) + vq_loss

    return train_step_flops(step)


def measure_backbone(preset: Preset, ds: ImageDataset, device: torch.device, sizes: PerfSizes,
                     seed: int) -> dict[str, Any]:
    """Images/s and FLOP/s of `train_vqvae` itself over `backbone_steps` steps."""
    bs = preset.train.batch_size
    train = _images(ds, "train", sizes.backbone_steps * bs)
    epochs = math.ceil(sizes.backbone_steps / max(1, len(train) // bs))
    model = VQVAE(preset.vqvae)
    warm = TrainConfig(epochs=1, batch_size=bs, lr=preset.train.lr, seed=seed,
                       precision=preset.train.precision)
    train_vqvae(model, train[:2 * bs], warm, device=device, progress=NullProgress())
    summary = train_vqvae(model, train, replace(warm, epochs=epochs), device=device,
                          progress=NullProgress())
    batch = to_float(train[:bs], device)
    flops = backbone_flops(preset, device, batch)
    return {"batch_size": bs, "resolution": preset.resolution, "steps": summary["steps"],
            "wall_s": summary["train_wall_s"], "images_per_s": summary["train_images_per_s"],
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_step": flops,
            "achieved_flops_per_s": flops * summary["steps"] / summary["train_wall_s"],
            "amp": f"{summary['precision']} + channels_last"}


def autoregressive_priors() -> list[str]:
    """Registered priors that sample position by position (subclasses of AutoregressivePrior)."""
    return [name for name in priors.available_priors()
            if issubclass(priors.get_prior(name), AutoregressivePrior)]


def warm_up_sampling(name: str, preset: Preset, num_codes: int, device: torch.device, n: int) -> None:
    """Cached sampling of a 2x2 grid, so that one-off costs (kernel selection, thread pool,
    allocator) are not charged to the first timed grid: `sampling_speed` times cold."""
    prior = untrained_prior(name, preset, num_codes, 2, device, seed=0)
    prior.sample(n, generator=torch.Generator(device).manual_seed(0))


def measure_sampling_one(name: str, preset: Preset, num_codes: int, side: int, n: int,
                         device: torch.device, sizes: PerfSizes, seed: int) -> dict[str, Any]:
    """sampling_speed of one prior, n grids of side x side at once; the naive path is timed on
    as many positions as fit in max_naive_s (one full forward each) and extrapolated."""
    prior = untrained_prior(name, preset, num_codes, side, device, seed)
    n_pos = side * side
    zeros = torch.zeros(n, side, side, dtype=torch.int64, device=device)
    forward_s = forward_seconds(prior, zeros, repeats=1)  # sizes the naive timing only
    n_timed = max(1, min(n_pos, int(sizes.max_naive_s / max(forward_s, 1e-9))))
    speed = sampling_speed(prior, n, seed=seed, naive_positions=n_timed, repeats=3,
                           repeat_budget_s=sizes.max_naive_s)  # best of up to 3 cached runs
    return {"prior": name, "grid": side, "num_codes": num_codes,
            "n_parameters": prior.num_parameters(), "naive_positions_timed": n_timed,
            "naive_positions": n_pos, "cached_s_per_grid": speed["cached_s"] / n,
            "naive_s_per_grid": speed["naive_s"] / n, **speed}


def measure_features(preset: Preset, ds: ImageDataset, device: torch.device, sizes: PerfSizes,
                     seed: int, cache_dir: Path) -> dict[str, Any]:
    """Images/s of the `mri` extractor's `features` (its training or cache load timed apart)."""
    t0 = time.perf_counter()
    extractor = build_extractor("mri", train_images=np.asarray(ds.splits["train"].images),
                                cache_dir=cache_dir / "extractors", device=device, seed=seed,
                                preset=preset.base, progress=None, weights_path=None)
    build_s = time.perf_counter() - t0
    x = to_float(_images(ds, "test", sizes.n_feature_images), torch.device("cpu"))
    extractor.features(x[:8])  # warm-up
    wall_s = timed(lambda: extractor.features(x), device)[0]
    return {"extractor": extractor.name, "extractor_id": extractor.id, "dim": extractor.dim,
            "n_images": len(x), "resolution": preset.resolution, "build_s": build_s,
            "wall_s": wall_s, "images_per_s": len(x) / wall_s}


# --- orchestration ------------------------------------------------------------------------


@dataclass(frozen=True)
class PerfResult:
    report: dict[str, Any]
    path: Path  # where the JSON was written


@dataclass
class _Context:
    cfg: PerfConfig
    preset: Preset
    device: torch.device
    sizes: PerfSizes
    progress: Progress
    dataset: ImageDataset | None = None

    def images(self) -> ImageDataset:
        if self.dataset is None:
            data_cfg = DataConfig(resolution=self.preset.resolution, seed=self.cfg.seed,
                                  mni_sizes=self.preset.mni_sizes)
            self.dataset = load_dataset(self.cfg.dataset, data_cfg,
                                        cache_dir=self.cfg.resolved_cache_dir / "data")
        return self.dataset


def _peak_dtypes(ctx: _Context) -> dict[str, torch.dtype]:
    """fp32, and bf16 where auto trains in it (CUDA, a CPU with native bf16)."""
    dtypes = {"fp32": torch.float32}
    if ctx.device.type == "cuda" or native_bf16_cpu():
        dtypes["bf16"] = torch.bfloat16
    return dtypes


def _matmul_peaks(ctx: _Context) -> dict[str, dict[str, float]]:
    n = ctx.sizes.matmul_n or (8192 if ctx.device.type == "cuda" else 2048)
    return {name: matmul_peak(ctx.device, n=n, seconds=ctx.sizes.matmul_s, dtype=dtype)
            for name, dtype in _peak_dtypes(ctx).items()}


def _peaks_around(ctx: _Context, measure: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """measure() and the matmul peaks, each measured before and after it with the higher kept,
    so that a lull in the machine's load during the measurement alone cannot inflate a share
    of the peak."""
    before = _matmul_peaks(ctx)
    out = measure()
    after = _matmul_peaks(ctx)
    return out, {k: max(before[k], after[k], key=lambda p: p["best_flops_per_s"]) | {
        "best_before_flops_per_s": before[k]["best_flops_per_s"],
        "best_after_flops_per_s": after[k]["best_flops_per_s"]} for k in before}


def _section_backbone(ctx: _Context) -> dict[str, Any]:
    out, peaks = _peaks_around(ctx, lambda: measure_backbone(ctx.preset, ctx.images(), ctx.device,
                                                             ctx.sizes, ctx.cfg.seed))
    return out | {f"share_of_{k}_matmul_peak": out["achieved_flops_per_s"] / p["best_flops_per_s"]
                  for k, p in peaks.items()} | {"matmul_peak": peaks}


def _section_sampling(ctx: _Context) -> list[dict[str, Any]]:
    rows, names, num_codes = [], autoregressive_priors(), ctx.preset.vqvae.num_codes
    cases = ctx.sizes.sampling_cases()
    ctx.progress.start("perf: sampling", len(names) * len(cases))
    for name in names:
        warm_up_sampling(name, ctx.preset, num_codes, ctx.device, ctx.sizes.n_grids)
        for side, n in cases:
            rows.append(measure_sampling_one(name, ctx.preset, num_codes, side, n,
                                             ctx.device, ctx.sizes, ctx.cfg.seed))
            ctx.progress.advance(1)
    return rows


def _section_data(ctx: _Context) -> dict[str, Any]:
    data_cfg = DataConfig(resolution=ctx.preset.resolution, seed=ctx.cfg.seed,
                          mni_sizes=ctx.preset.mni_sizes)
    return measure_loading(ctx.cfg.dataset, data_cfg, ctx.cfg.resolved_cache_dir / "data")


def _section_features(ctx: _Context) -> dict[str, Any]:
    return measure_features(ctx.preset, ctx.images(), ctx.device, ctx.sizes, ctx.cfg.seed,
                            ctx.cfg.resolved_cache_dir)


def _section_peer(ctx: _Context) -> dict[str, Any]:
    ds, cap = ctx.images(), ctx.preset.max_train_images or None
    test = ds.splits["test"].images
    pick = np.random.default_rng(ctx.cfg.seed).choice(
        len(test), min(len(test), ctx.sizes.peer_test_images), replace=False)
    return race_peer(ctx.cfg.peer, ctx.preset, device=ctx.device, seed=ctx.cfg.seed,
                     train_images=np.asarray(ds.splits["train"].images[:cap]),
                     test_images=np.asarray(test[np.sort(pick)]),
                     budget_s=ctx.sizes.peer_budget_s)


def _section_precision(ctx: _Context) -> dict[str, Any]:
    s = ctx.sizes
    return measure_precision(ctx.preset, _images(ctx.images(), "train", s.precision_steps
                                                 * ctx.preset.train.batch_size),
                             ctx.device, steps=s.precision_steps, rounds=s.precision_rounds,
                             prior_names=ctx.cfg.precision_priors, seed=ctx.cfg.seed)


def _section_scoring(ctx: _Context) -> dict[str, Any]:
    ds, s = ctx.images(), ctx.sizes
    return measure_scoring(_images(ds, "train", s.score_refs), _images(ds, "test", s.score_queries),
                           _images(ds, "val", s.score_queries), s.brute_queries)


def _section_bits(ctx: _Context) -> dict[str, Any]:
    test_grids = len(ctx.images().splits["test"].images)
    rows, peaks = _peaks_around(ctx, lambda: measure_test_bits(
        ctx.preset, ctx.device, grids=ctx.sizes.bits_grids, rounds=ctx.sizes.bits_rounds,
        precisions=tuple(_peak_dtypes(ctx)), seed=ctx.cfg.seed))
    return {"grid": ctx.preset.grid, "num_codes": ctx.preset.vqvae.num_codes,
            "test_grids": test_grids, "grids_timed": ctx.sizes.bits_grids,
            "batch": bits_batch(ctx.device),
            "rounds": ctx.sizes.bits_rounds, "matmul_peak": peaks,
            "priors": [with_floors(row, peaks, test_grids) for row in rows]}


_SECTION_FNS: dict[str, Callable[[_Context], Any]] = {
    "backbone": _section_backbone, "sampling": _section_sampling, "data": _section_data,
    "features": _section_features, "peer": _section_peer, "scoring": _section_scoring,
    "precision": _section_precision, "bits": _section_bits}


def device_slug(device: torch.device) -> str:
    """'cpu', or 'cuda-nvidia-h100-80gb-hbm3': the file name part of the default report."""
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device).lower()
    return "cuda-" + "-".join("".join(c if c.isalnum() else " " for c in name).split())


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch intra-op threads set to n (0 = untouched) for the block, then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_perf(cfg: PerfConfig, *, progress: Progress | None = None) -> PerfResult:
    """Run the chosen sections on one device and write the report as JSON (atomically)."""
    device = resolve_device(cfg.device)
    if "peer" in cfg.sections:
        peer_module(cfg.peer)  # missing optional dependency: fail before the other sections
    path = cfg.out or cfg.results_dir / f"perf-{device_slug(device)}.json"
    prepare_out(path.parent)  # an unwritable place fails before the work, in one line
    sizes = cfg.resolved_sizes
    ctx = _Context(cfg, get_preset(cfg.preset), device, sizes, progress or NullProgress())
    with intra_op_threads(cfg.threads):
        report = _header(cfg, device, sizes)
        for section in cfg.sections:
            load_before, t0 = os.getloadavg()[0], time.perf_counter()
            ctx.progress.start(f"perf: {section}", None)
            report[section] = _SECTION_FNS[section](ctx)
            ctx.progress.stop()
            report["section_s"][section] = time.perf_counter() - t0
            report["load_average"][section] = [load_before, os.getloadavg()[0]]
    write_json_atomic(path, report)
    return PerfResult(report, path)


def _header(cfg: PerfConfig, device: torch.device, sizes: PerfSizes) -> dict[str, Any]:
    return {"format": FORMAT, "device": device_name(device), "preset": cfg.preset,
            "dataset": cfg.dataset, "seed": cfg.seed, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items()},
            "load_average": {"start": list(os.getloadavg())}, "section_s": {}}
