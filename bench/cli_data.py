"""`bench data ...`: look at a dataset spec before training on it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bench.cli_common import option_errors, out_console, user_errors
from bench.data import DataConfig, ImageDataset, load_dataset
from bench.data.inspect import PERCENTILES, SplitSummary, montage, summarize, write_png
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
    """Counts per split and label, subjects, intensity statistics, notes, and a montage PNG."""
    with option_errors():
        config = DataConfig(resolution=resolution, seed=seed, skip_bad=skip_bad)
    if montage_path is not None:
        prepare_out(montage_path.parent)  # an unwritable place fails before the work
    ds = load_dataset(spec, config, cache_dir=cache_dir, progress=RichProgress())
    out_console.print(summary_table(ds, summarize(ds)))
    for note in ds.notes:
        out_console.print(f"note: {note}", soft_wrap=True)
    path = write_png(montage_path or cache_dir / "montages" / f"{ds.kind}-{ds.fingerprint}.png",
                     montage(ds))
    out_console.print(f"fingerprint {ds.fingerprint}; montage {path}", soft_wrap=True)
