"""`bench sweep`: a grid of runs (prior x seed x dataset x preset), one submitit job per cell.

The shared stages of every (dataset, preset) setting (data cache, backbone, code export,
backbone scores, feature extractor, ceiling rows) are built first, in this process, through the
same functions `bench run` uses; each cell then runs `bench.run.run_benchmark` as its own job
and finds them in the store by key. A cell whose run record the store already holds is skipped.
The jobs themselves are submitted and watched by `bench.sweep_jobs`.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.presets import field_value, known_keys, typed, get_preset
from bench.run import (RunConfig, build_prior, ceiling_rows, check_options, n_scored,
                       prepare_shared, run_artefact, run_benchmark, scoring_context)
from bench.stages import StageContext, stage_extractor

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class SweepConfig:
    """Every key of a sweep file; `bench sweep`'s flags have the same names (- for _)."""

    priors: tuple[str, ...] = ()  # registry names; at least one
    seeds: tuple[int, ...] = (0,)  # prior seeds
    dataset: tuple[str, ...] = ("mni",)  # dataset specs
    preset: tuple[str, ...] = ("quick",)  # built-in names or .toml paths
    executor: str = "local"  # local (processes on this machine) | slurm
    jobs: int = 1  # cells running at once (local processes, or Slurm jobs in flight)
    out: Path = Path("results")  # results folder, shared by every cell
    device: str = "auto"  # auto | cpu | cuda, in this process and in every cell
    threads: int = 0  # torch intra-op CPU threads per process (0: torch's default)
    gpus_per_job: int = 1  # GPUs per cell: Slurm --gpus-per-node; local: cells see GPUs 0..N-1
    timeout_min: int = 0  # minutes a cell may run; 0: no limit locally, required on Slurm
    partition: str = ""  # Slurm partition ("": the cluster's default)
    account: str = ""  # Slurm account to charge ("": your default)

    def __post_init__(self) -> None:
        if not self.priors:
            raise BenchError("no priors to sweep; give --priors NAME,NAME or priors = [...] in "
                             "the sweep file")
        for key in ("priors", "seeds", "dataset", "preset"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise BenchError(f"{key} must list one or more distinct values, got "
                                 f"{list(values)}")
        if self.executor not in EXECUTORS:
            raise BenchError(f"unknown executor {self.executor!r}; available: "
                             f"{', '.join(EXECUTORS)}")
        for key, low in (("seeds", 0), ("jobs", 1), ("threads", 0), ("gpus_per_job", 0),
                         ("timeout_min", 0)):
            value = min(getattr(self, key)) if key == "seeds" else getattr(self, key)
            if value < low:
                raise BenchError(f"{key} must be >= {low}, got {value}")
        if self.executor == "slurm" and not self.timeout_min:
            raise BenchError("--executor slurm needs --timeout-min MINUTES (Slurm's time limit "
                             "of each cell; submitit's default is 5 minutes)")


def load_sweep_file(path: Path) -> dict[str, Any]:
    """The keys of a sweep file (TOML, keys of SweepConfig), each typed as its field."""
    where = f"sweep file {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{where} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{where}: not valid TOML: {e}") from None
    hints = typing.get_type_hints(SweepConfig)
    known_keys(raw, list(hints), where, "")
    return {key: Path(typed(value, str, where, key)) if hints[key] is Path
            else field_value(value, hints[key], where, key) for key, value in raw.items()}


@dataclass(frozen=True)
class Cell:
    """One job of a sweep: the `bench run` it stands for."""

    run: RunConfig

    @property
    def label(self) -> str:
        r = self.run
        return f"{r.prior} · seed {r.seed} · {r.dataset} · {r.preset}"


def grid(cfg: SweepConfig) -> list[Cell]:
    """Every cell, dataset and preset outermost (the order their shared stages are built in)."""
    out = cfg.out.resolve()  # the jobs may start in another folder
    return [Cell(RunConfig(prior=prior, dataset=dataset, preset=preset, seed=seed,
                           device=cfg.device, out=out))
            for dataset, preset, prior, seed in itertools.product(cfg.dataset, cfg.preset,
                                                                  cfg.priors, cfg.seeds)]


def check_cells(cells: list[Cell]) -> None:
    """Refuse unknown priors, presets and options before anything is built."""
    for cell in cells:
        get_preset(cell.run.preset)
        check_options(cell.run)


def prepare(cells: list[Cell], sc: StageContext) -> set[Cell]:
    """Build the shared stages of every setting of `cells`; return the cells already finished."""
    finished: set[Cell] = set()
    for _, group in itertools.groupby(cells, key=lambda c: (c.run.dataset, c.run.preset)):
        finished |= prepare_setting(list(group), sc)
    return finished


def prepare_setting(cells: list[Cell], sc: StageContext) -> set[Cell]:
    """One (dataset, preset): data, backbone, export, extractor, and the ceiling rows of each
    seed that still has a cell to run, exactly as `run_benchmark` builds them."""
    first = cells[0].run
    preset = get_preset(first.preset)
    shared = prepare_shared(first, preset, sc)
    extractor = stage_extractor(first.extractor, shared.ds, seed=first.backbone_seed,
                                preset=preset.base, weights_path=first.fid_weights, sc=sc)
    n = n_scored(first, preset, shared.ds)
    # only each prior's config and its precision on the cells' device are read: they name the run
    unfitted = {name: build_prior(dataclasses.replace(first, prior=name), preset, shared.export,
                                  sc.device) for name in dict.fromkeys(c.run.prior for c in cells)}
    finished = {c for c in cells if sc.store.exists(run_artefact(
        c.run, preset, unfitted[c.run.prior], shared.export, extractor.id, n))}
    seeds = sorted({c.run.seed for c in cells if c not in finished})
    if seeds:
        ctx, rest = scoring_context(first, shared, extractor, n, sc)
        for seed in seeds:
            ceiling_rows(dataclasses.replace(first, seed=seed), shared, ctx, rest, sc)
    return finished


def run_cell(cfg: RunConfig, threads: int) -> str:
    """The body of one job (in its own process): `bench run` for one cell; its run folder."""
    if threads:
        torch.set_num_threads(threads)
    return str(run_benchmark(cfg).directory)
