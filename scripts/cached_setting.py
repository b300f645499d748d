"""One `bench run` setting rebuilt from a results folder's cached artefacts, for the scripts
that take a stored setting apart (fd_terms.py, real_side.py). The store is opened read-only:
a stage that is not cached is an error, never built here. Run `bench run` first, with the same
--precision (the scripts take `--precision P` as their last two arguments)."""
import sys
from pathlib import Path

import torch

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
