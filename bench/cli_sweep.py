"""`bench sweep`: flags and a sweep file become one SweepConfig; `bench.cli` mounts `sweep`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer

from bench.cli_common import print_comparison, user_errors
from bench.errors import BenchError
from bench.progress import err_console
from bench.sweep import SweepConfig, load_sweep_file
from bench.sweep_jobs import CellRun, run_sweep


@user_errors
def sweep(
    priors: Optional[str] = typer.Option(None, help="Priors, comma-separated, e.g. "
                                         "pixelcnn,gated-pixelcnn,transformer"),
    seeds: Optional[str] = typer.Option(None, help="Seeds, comma-separated, e.g. 0,1,2 (default 0)"),
    dataset: Optional[list[str]] = typer.Option(None, help="Dataset spec; repeat for several "
                                                "(default mni)"),
    preset: Optional[list[str]] = typer.Option(None, help="Preset name or FILE.toml; repeat for "
                                               "several (default quick)"),
    executor: Optional[str] = typer.Option(None, help="local (processes here) | slurm (default local)"),
    jobs: Optional[int] = typer.Option(None, help="Cells running at once (default 1)"),
    out: Optional[Path] = typer.Option(None, help="Results folder (default results)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (default auto)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads per process (0 = torch's default)"),
    gpus_per_job: Optional[int] = typer.Option(None, help="GPUs per cell (default 1)"),
    timeout_min: Optional[int] = typer.Option(None, help="Minutes a cell may run (required on "
                                              "Slurm; 0 = no limit locally)"),
    partition: Optional[str] = typer.Option(None, help="Slurm partition"),
    account: Optional[str] = typer.Option(None, help="Slurm account"),
    sweep_file: Optional[Path] = typer.Option(None, help="TOML file of the same keys (- as _); "
                                              "flags override it"),
) -> None:
    """Run every prior x seed x dataset x preset cell as a submitit job, then compare them."""
    flags = {"priors": split(priors, "--priors", str), "seeds": split(seeds, "--seeds", int),
             "dataset": dataset and tuple(dataset), "preset": preset and tuple(preset),
             "executor": executor, "jobs": jobs, "out": out, "device": device, "threads": threads,
             "gpus_per_job": gpus_per_job, "timeout_min": timeout_min, "partition": partition,
             "account": account}
    cfg = sweep_config(flags, sweep_file)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runs = run_sweep(cfg)
    print_comparison(cfg.out)
    summarise(runs)


def split(text: str | None, flag: str, kind: Callable[[str], Any]) -> tuple | None:
    """'a,b' -> (a, b) of `kind`; None stays None (the flag was not given)."""
    if text is None:
        return None
    try:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
    except ValueError:
        raise BenchError(f"{flag} must be comma-separated {kind.__name__} values like "
                         f"{'0,1,2' if kind is int else 'pixelcnn,transformer'}, got {text!r}") from None


def sweep_config(flags: dict[str, Any], sweep_file: Path | None) -> SweepConfig:
    """Defaults, then the sweep file's keys, then the flags given (None: not given)."""
    values = load_sweep_file(sweep_file) if sweep_file is not None else {}
    values |= {k: v for k, v in flags.items() if v is not None}
    return SweepConfig(**values)


def summarise(runs: list[CellRun]) -> None:
    """One line for the sweep, one per failed cell with its log; non-zero exit on a failure."""
    count = {s: sum(r.state == s for r in runs) for s in ("done", "skipped", "failed")}
    if count["skipped"] == len(runs):
        err_console.print(f"sweep: all {len(runs)} cells had finished before; nothing to run",
                          soft_wrap=True)
        return
    err_console.print(f"sweep: {len(runs)} cells: {count['done']} done, {count['skipped']} "
                      f"skipped (finished before), {count['failed']} failed", soft_wrap=True)
    failed = [r for r in runs if r.state == "failed"]
    for r in failed:
        err_console.print(f"failed: {r.cell.label}: {r.reason}; log: {r.log} (stdout: "
                          f"{r.job.paths.stdout})", soft_wrap=True, highlight=False)
    if failed:
        raise BenchError(f"{len(failed)} of {len(runs)} cells failed (logs above); run the same "
                         f"command again to retry them")

