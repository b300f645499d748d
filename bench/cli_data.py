"""`bench data ...`: look at a dataset spec before training on it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bench.cli_common import option_errors, out_console, user_errors
from bench.data import DataConfig, ImageDataset, load_dataset
from bench.data.inspect import (PERCENTILES, TWIN_MIN_SLICES, TWIN_RMS, TWIN_SIDE, SplitSummary,
                                Twins, common_slice_count, find_twins, montage, summarize,
                                twin_notes, write_png)
from bench.progress import RichProgress
from bench.store import prepare_out

data_app = typer.Typer(help="Inspect datasets: counts, subjects, intensities, a montage.",
                       no_args_is_help=True)


@data_app.callback()
def _group() -> None:
    """Inspect datasets: counts, subjects, intensities, a montage."""


def summary_table(ds: ImageDataset, rows: list[SplitSummary]) -> Table:
    table = Table(title=f"{ds.spec}  ({ds.config.resolution}x{ds.config.resolution} uint8)")
    for column in ("split", "images", "subjects", *ds.label_names, "mean", "std",
                   *(f"p{p}" for p in PERCENTILES)):
        table.add_column(column, justify="left" if column == "split" else "right")
    for r in rows:
        table.add_row(r.name, str(r.n_images), str(r.n_subjects),
                      *(str(r.per_label[label]) for label in ds.label_names),
                      f"{r.mean:.1f}", f"{r.std:.1f}", *(str(v) for v in r.percentiles.values()))
    return table


def twins_table(twins: list[Twins]) -> Table:
    table = Table(title=f"subjects stored twice: slices at {TWIN_SIDE}x{TWIN_SIDE}, RMS to the "
                        f"nearest training subject (another one, for train)")
    for column in ("split", "subjects", "compared", f"twins (RMS < {TWIN_RMS})", "their slices",
                   "median RMS", "nearest RMS above the line"):
        table.add_column(column, justify="left" if column == "split" else "right")

    def rms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.4f}"

    for t in twins:
        table.add_row(t.split, str(t.subjects), str(t.compared), str(t.twins), str(t.slices),
                      rms(t.nearest_median), rms(t.nearest_above))
    return table


@data_app.command("inspect")
@user_errors
def inspect(
    spec: str = typer.Argument(..., help="mni | oasis:PATH | adni:PATH | folder:PATH | nifti:PATH"),
    resolution: int = typer.Option(64, help="square side in px: 32, 64, 128 or 256"),
    seed: int = typer.Option(0, help="seeds mni augmentation and subject splits"),
    cache_dir: Path = typer.Option(Path(".cache/data"), help="where decoded splits are cached"),
    montage_path: Optional[Path] = typer.Option(None, "--montage",
                                                help="montage PNG [default: CACHE_DIR/montages/]"),
    skip_bad: bool = typer.Option(False, help="skip unusable files with a note instead of failing"),
) -> None:
    """Counts per split and label, subjects, intensity statistics, subjects stored twice
    (twins), notes, and a montage PNG."""
    with option_errors():
        config = DataConfig(resolution=resolution, seed=seed, skip_bad=skip_bad)
    if montage_path is not None:
        prepare_out(montage_path.parent)  # an unwritable place fails before the work
    ds = load_dataset(spec, config, cache_dir=cache_dir, progress=RichProgress())
    out_console.print(summary_table(ds, summarize(ds)))
    twins = find_twins(ds)
    if twins:
        out_console.print(twins_table(twins))
    else:
        out_console.print(f"subjects stored twice: not checked (training subjects have "
                          f"{common_slice_count(ds)} slice(s); under {TWIN_MIN_SLICES}, a blank "
                          f"or look-alike slice would pass for a twin)")
    for note in [*ds.notes, *twin_notes(twins)]:
        out_console.print(f"note: {note}", soft_wrap=True)
    path = write_png(montage_path or cache_dir / "montages" / f"{ds.kind}-{ds.fingerprint}.png",
                     montage(ds))
    out_console.print(f"fingerprint {ds.fingerprint}; montage {path}", soft_wrap=True)
