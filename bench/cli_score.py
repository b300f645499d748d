"""`bench score RUN_DIR --against SPEC`: a finished run's samples scored against another
dataset's test split (`bench.rescore`). Mounted in `bench.cli` with `app.command("score")(score)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.cli_common import out_console, user_errors
from bench.rescore import ScoreConfig, score_run


@user_errors
def score(
    run_dir: Path = typer.Argument(..., help="A finished run: RESULTS/runs/<prior>-<id>."),
    against: str = typer.Option(..., help="Dataset whose test split the samples are scored "
                                          "against: oasis:PATH | adni:PATH | folder:PATH | "
                                          "nifti:PATH | mni"),
    out: Optional[Path] = typer.Option(None, help="Results folder of the new records "
                                                  "(default: the run's)."),
    preset: str = typer.Option("", help="Preset SPEC is loaded with (default: the run's; its "
                                        "resolution must be the run's)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    fid_weights: Optional[Path] = typer.Option(None, help="Inception weights file, for a run "
                                                          "scored with --extractor inception."),
    skip_bad: bool = typer.Option(False, help="Skip unusable or misnamed files of SPEC."),
    force: bool = typer.Option(False, help="Recompute and overwrite the finished records."),
) -> None:
    """Score a finished run's samples against the test split of another dataset, with the run's
    own backbone and features, beside that backbone's reconstructions of those test images."""
    from bench.cli import print_scores  # bench.cli mounts this command: import it at call time

    result = score_run(ScoreConfig(run_dir=run_dir, against=against, out=out, preset=preset,
                                   device=device, fid_weights=fid_weights, skip_bad=skip_bad,
                                   force=force))
    source = result.record["against"]
    out_console.print(f"samples of run {source['run_id']} (trained on {source['data']['name']}) "
                      f"scored against the test split of {result.record['data']['name']}")
    print_scores(result)
