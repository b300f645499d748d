"""`bench check-prior`: the prior contract (`priors.contract`) on an installed prior.

Mounted in `bench.cli` with `app.command("check-prior")(check_prior)`. No pytest and no
checkout needed: every rule runs on tiny codes on the CPU in seconds.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
import typer

from bench.cli_common import user_errors
from bench.errors import BenchError
from bench.progress import err_console
from priors import contract

EXIT_CONTRACT_BROKEN = 1


@user_errors
def check_prior(
    name: Optional[str] = typer.Argument(None, help="Prior name (see `bench priors`)."),
    all_: bool = typer.Option(False, "--all", help="Check every registered prior and every "
                              "entry point that failed to load."),
) -> None:
    """Run every rule of the prior contract: one line per rule, exit 1 on a failure."""
    if (name is None) != all_:
        raise BenchError("give one prior NAME or --all (see `bench priors`)")
    torch.set_num_threads(1)  # tiny tensors: one intra-op thread is the fastest
    failures = sum(report(n) for n in (contract.names_to_check() if all_ else [name]))
    if failures:
        raise typer.Exit(EXIT_CONTRACT_BROKEN)


def report(name: str) -> int:
    """Print one line per rule for the prior `name` (a summary on stderr); the failure count."""
    t0 = time.perf_counter()
    results = contract.check_prior(name)
    for result in results:
        typer.echo(result.line())
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "skip", "FAIL")}
    err_console.print(f"{name}: {counts['pass']} pass, {counts['skip']} skip, "
                      f"{counts['FAIL']} FAIL in {time.perf_counter() - t0:.1f}s", markup=False)
    return counts["FAIL"]
