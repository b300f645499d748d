"""What every CLI command shares: one-line errors with a non-zero exit code, no traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer
from rich.console import Console

from bench.errors import BenchError

F = TypeVar("F", bound=Callable)
# stdout: results. Piped or redirected output gets a wide console, so tables are not squeezed
# into 80 columns; a terminal keeps its own width.
out_console = Console() if Console().is_terminal else Console(width=200)
EXIT_USER_ERROR = 2


def fail(message: str) -> "typer.Exit":
    """Print `error: message` on stderr as one line and return the Exit to raise."""
    one_line = " ".join(str(message).split())
    print(f"error: {one_line}", file=sys.stderr)
    return typer.Exit(EXIT_USER_ERROR)


def user_errors(fn: F) -> F:
    """Turn BenchError / ValueError (bad input, invalid configs) into one-line errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BenchError, ValueError, FileNotFoundError, PermissionError) as e:
            raise fail(str(e)) from None
        except KeyboardInterrupt:
            raise fail("interrupted") from None

    return wrapper  # type: ignore[return-value]
