"""Progress on stderr via rich; results go to stdout."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

err_console = Console(stderr=True)


class RichProgress:
    """Implements `priors.base.Progress` (start / advance / stop) on one rich task at a time.

    Every metric reported through `advance` is kept in `history[description]` as
    (step, {name: value}) so that training curves can be saved with a run.
    """

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self._console = console or err_console
        self._enabled = enabled
        self._bar: Progress | None = None
        self._task = None
        self._current = ""
        self._step = 0
        self.history: dict[str, list[tuple[int, dict[str, float]]]] = {}

    def start(self, description: str, total: int | None) -> None:
        self.stop()
        self._current, self._step = description, 0
        self.history[description] = []
        if not self._enabled:
            return
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[metrics]}"), console=self._console,
                             transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, metrics="")

    def advance(self, n: int = 1, **metrics: float) -> None:
        self._step += n
        if metrics and self._current in self.history:
            self.history[self._current].append((self._step, {k: float(v) for k, v in metrics.items()}))
        if self._bar is None:
            return
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        self._bar.update(self._task, advance=n, **({"metrics": text} if metrics else {}))

    def curve(self, description: str) -> dict[str, list[float]]:
        """{"step": [...], metric: [...]} for one task, e.g. to store in a record."""
        points = self.history.get(description, [])
        out: dict[str, list[float]] = {"step": [float(s) for s, _ in points]}
        for name in sorted({k for _, m in points for k in m}):
            out[name] = [m.get(name, float("nan")) for _, m in points]
        return out

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
