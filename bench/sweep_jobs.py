"""The jobs of a sweep: submitit executors (local processes or Slurm), at most `jobs` cells in
flight, a live rich table of every cell's state on stderr.

submitit's LocalExecutor starts every submitted job at once, so cells are submitted here only as
slots free up (the same bound holds for Slurm jobs in flight). A failed cell keeps its submitit
log paths and never stops the others.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit
from rich.live import Live
from rich.table import Table
from submitit.core.utils import FailedJobError

from bench.errors import BenchError
from bench.progress import RichProgress, err_console
from bench.run import open_store, resolve_device
from bench.stages import StageContext
from bench.sweep import Cell, SweepConfig, check_cells, grid, prepare, run_cell

LOCAL_NO_LIMIT_MIN = 60 * 24 * 365  # submitit's local jobs always carry a time limit: a year
WAITING = ("PENDING", "UNKNOWN", "REQUEUED", "CONFIGURING", "QUEUED")  # submitted, not started
STATE_STYLE = {"pending": "dim", "running": "cyan", "done": "green", "skipped": "blue",
               "failed": "bold red"}
POLL_S = 0.5  # seconds between looks at the jobs in flight


def executor_parameters(cfg: SweepConfig) -> dict[str, Any]:
    """What every cell's job asks for, in submitit's AutoExecutor names."""
    params: dict[str, Any] = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": cfg.gpus_per_job,
                              "timeout_min": cfg.timeout_min or LOCAL_NO_LIMIT_MIN}
    if cfg.executor == "slurm":  # "" means the cluster's default: left out of the sbatch file
        params |= {"slurm_partition": cfg.partition or None, "slurm_account": cfg.account or None}
    return params


def make_executor(cfg: SweepConfig, folder: Path) -> submitit.AutoExecutor:
    """A submitit executor writing its job files and logs into `folder`."""
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cfg.executor)
    except RuntimeError as e:  # e.g. no srun on PATH
        raise BenchError(f"--executor {cfg.executor}: submitit cannot use it here ({e}); run "
                         f"from a Slurm login node, or use --executor local") from None
    executor.update_parameters(**executor_parameters(cfg))
    return executor


@dataclass
class CellRun:
    """One cell as the sweep sees it; `job` is its submitit job once submitted."""

    cell: Cell
    state: str  # pending | running | done | skipped | failed
    job: Any = None
    started: float = 0.0  # time.monotonic() at submission, then when it was seen running
    ended: float = 0.0
    reason: str = ""  # why it failed, one line

    @property
    def wall_s(self) -> float | None:
        if not self.started or self.state == "pending":
            return None
        return (self.ended or time.monotonic()) - self.started

    @property
    def log(self) -> str:
        """The job's stderr file (`job.paths.stdout` is its stdout)."""
        return "" if self.job is None else str(self.job.paths.stderr)


def failure_reason(error: BaseException) -> str:
    """One line from a submitit job error: the exception a cell raised, or that it died."""
    if isinstance(error, FailedJobError):
        raised = [line for line in str(error).splitlines() if re.match(r"[A-Za-z_][\w.]*: ", line)]
        return f"raised {raised[-1]}" if raised else "raised an exception"
    return "ended without a result (killed, out of memory or out of time)"


def watch(run: CellRun) -> bool:
    """Update a submitted cell's state; True once its job has ended."""
    if run.job.done():
        run.ended = time.monotonic()
        error = run.job.exception()
        run.state = "failed" if error is not None else "done"
        run.reason = "" if error is None else failure_reason(error)
        return True
    if run.state == "pending" and str(run.job.state).upper() not in WAITING:
        run.state, run.started = "running", time.monotonic()
    return False


def run_jobs(runs: list[CellRun], submit: Callable[[Cell], Any], jobs: int,
             on_change: Callable[[], None], poll_s: float = POLL_S) -> None:
    """Submit the pending cells, at most `jobs` in flight, until every one has ended. On an
    interrupt the jobs in flight are cancelled."""
    queue = [r for r in runs if r.state == "pending"]
    active: list[CellRun] = []
    try:
        while queue or active:
            while queue and len(active) < jobs:
                run = queue.pop(0)
                run.job, run.started = submit(run.cell), time.monotonic()
                active.append(run)
            active = [r for r in active if not watch(r)]
            on_change()
            if active:
                time.sleep(poll_s)
    except BaseException:
        for run in active:
            run.job.cancel(check=False)
        raise


def status_table(runs: list[CellRun]) -> Table:
    table = Table(title="bench sweep")
    for column in ("cell", "state", "wall s", "log"):
        table.add_column(column, justify="right" if column == "wall s" else "left",
                         overflow="fold")
    for r in runs:
        wall = r.wall_s
        table.add_row(r.cell.label, f"[{STATE_STYLE[r.state]}]{r.state}[/]",
                      "" if wall is None else f"{wall:.0f}", r.log)
    return table


def run_sweep(cfg: SweepConfig, *, progress: RichProgress | None = None) -> list[CellRun]:
    """Build the shared stages, then run every unfinished cell as a job; every cell's fate."""
    cells = grid(cfg)
    check_cells(cells)
    sc = StageContext(store=open_store(cfg.out), device=resolve_device(cfg.device),
                      progress=progress or RichProgress())
    folder = sc.store.new_sweep_dir()
    executor = make_executor(cfg, folder)  # fails before any training if it cannot work here
    finished = prepare(cells, sc)
    runs = [CellRun(c, "skipped" if c in finished else "pending") for c in cells]

    def submit(cell: Cell) -> Any:
        executor.update_parameters(name=f"bench-{cell.run.prior}-s{cell.run.seed}")
        return executor.submit(run_cell, cell.run, cfg.threads)

    with Live(status_table(runs), console=err_console, refresh_per_second=4) as live:
        run_jobs(runs, submit, cfg.jobs, on_change=lambda: live.update(status_table(runs)))
    if not err_console.is_terminal:
        err_console.line()  # a log file gets the last table without its final newline
    with contextlib.suppress(OSError):
        folder.rmdir()  # nothing was submitted: leave no empty folder behind
    return runs
