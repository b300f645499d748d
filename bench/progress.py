"""Progress on stderr via rich; results go to stdout."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

err_console = Console(stderr=True)


class RichProgress:
    """Implements `priors.base.Progress` (start / advance / stop) on one rich task at a time."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self._console = console or err_console
        self._enabled = enabled
        self._bar: Progress | None = None
        self._task = None

    def start(self, description: str, total: int | None) -> None:
        self.stop()
        if not self._enabled:
            return
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[metrics]}"), console=self._console,
                             transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, n: int = 1, **metrics: float) -> None:
        if self._bar is None:
            return
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        self._bar.update(self._task, advance=n, **({"metrics": text} if metrics else {}))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator["RichProgress"]:
        self.start(description, total)
        try:
            yield self
        finally:
            self.stop()
