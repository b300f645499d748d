"""One `bench run` setting rebuilt from a results folder's cached artefacts, for the scripts
that take a stored setting apart (fd_terms.py, real_side.py). The store is opened read-only:
a stage that is not cached is an error, never built here. Run `bench run` first, with the same
--precision (the scripts take `--precision P` as their last two arguments)."""
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.sampling import code_set

from bench.presets import get_preset
from bench.progress import RichProgress
from bench.run import RunConfig, Shared, prepare_shared
from bench.stages import StageContext, stage_extractor
from bench.store import Store

CPU = torch.device("cpu")


def precision_arg(argv: list[str]) -> tuple[list[str], str | None]:
    """argv without a trailing `--precision P`, and P (None: the preset's)."""
    if len(argv) >= 2 and argv[-2] == "--precision":
        return argv[:-2], argv[-1]
    return argv, None


def script_args(doc: str, fewest: int, most: int | None = None) -> tuple[list[str], str | None]:
    """A script's arguments without a trailing `--precision P`, and P; exits with the usage
    line of its docstring (its second paragraph) unless it got fewest..most of them."""
    argv, precision = precision_arg(sys.argv[1:])
    if len(argv) < fewest or (most is not None and len(argv) > most):
        sys.exit(doc.split("\n\n")[1])
    return argv, precision


def cached_setting(out: str, spec: str, preset_name: str, precision: str | None = None):
    """(run config, stage context, shared stages, mri extractor) of OUT's setting on CPU."""
    cfg = RunConfig(dataset=spec, out=Path(out), preset=preset_name, device="cpu",
                    precision=precision)
    preset = get_preset(preset_name).with_precision(precision)
    sc = StageContext(store=Store(Path(out), writer=False), device=CPU,
                      progress=RichProgress(enabled=False))
    shared: Shared = prepare_shared(cfg, preset, sc)
    extractor = stage_extractor("mri", shared.ds, seed=0, preset=preset.base, weights_path=None, sc=sc)
    return cfg, sc, shared, extractor


def fit_config(cls: Any, config: Any, export: Any, progress: Any) -> tuple[Any, dict, float]:
    """(prior, what its fit returned, fit seconds): prior class `cls` with `config` fitted with
    seed 0 on the export's train split, unconditional, on the CPU, as `bench run` fits it."""
    prior = cls(config, num_codes=export.num_codes, grid=export.grid, num_classes=0,
                codebook=export.codebook, device=CPU)
    t0 = time.perf_counter()
    summary = prior.fit(code_set(export, "train", False), code_set(export, "val", False), seed=0,
                        progress=progress)
    return prior, summary, time.perf_counter() - t0
