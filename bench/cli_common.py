"""What every CLI command shares: one-line errors with a non-zero exit code, no traceback."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import typer
from rich.console import Console

from bench.errors import BenchError
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
