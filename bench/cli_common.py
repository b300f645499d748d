"""What every CLI command shares: one-line errors with a non-zero exit code, no traceback;
the comparison tables (`bench compare`, and `bench sweep` when it ends)."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bench import records, tables
from bench.errors import BenchError
from bench.progress import err_console
from priors import PriorError
from vqvae import CheckpointError

F = TypeVar("F", bound=Callable)
# stdout: results. Piped or redirected output gets a wide console, so tables are not squeezed
# into 80 columns; a terminal keeps its own width.
out_console = Console() if Console().is_terminal else Console(width=200)
EXIT_USER_ERROR = 2
# the project's user-facing errors; anything else is a bug and keeps its traceback
USER_ERRORS = (BenchError, PriorError, CheckpointError)


def fail(message: str) -> "typer.Exit":
    """Print `error: message` on stderr as one line and return the Exit to raise."""
    one_line = " ".join(str(message).split())
    print(f"error: {one_line}", file=sys.stderr)
    return typer.Exit(EXIT_USER_ERROR)


@contextmanager
def option_errors() -> Iterator[None]:
    """Where command-line options become configs: a config's validation ValueError is the
    user's error there, raised on as a BenchError. Keep the block to config construction."""
    try:
        yield
    except ValueError as e:
        raise BenchError(str(e)) from None


def user_errors(fn: F) -> F:
    """Turn the project's errors (USER_ERRORS) into one-line errors; other exceptions are bugs
    and propagate with their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise fail(str(e)) from None
        except KeyboardInterrupt:
            raise fail("interrupted") from None

    return wrapper  # type: ignore[return-value]


def print_comparison(out: Path) -> None:
    """One table per setting of every finished run under `out` on stdout; writes
    comparison.{md,csv,tex,json} into `out`."""
    warn = lambda text: err_console.print(f"[yellow]warning:[/] {text}")  # noqa: E731
    recs = records.collect(out, warn=warn)
    for line in records.repeated_cells(recs):
        warn(line)
    if not recs:
        raise BenchError(f"no finished runs under {out / 'runs'} or {out / records.CARRIED}; "
                         f"run `bench run` first")
    groups = tables.comparison(recs)
    for meta, table in groups:
        text = tables.as_text_frame(meta, table)
        rich_table = Table(title=tables.title(meta), caption=tables.backbone_line(meta))
        for col in text.columns:
            rich_table.add_column(col, justify="left" if col == "prior" else "right")
        for row in text.itertuples(index=False):
            rich_table.add_row(*(str(v) for v in row))
        out_console.print(rich_table)
    for path in tables.write_all(groups, out):
        out_console.print(f"wrote {path}")
