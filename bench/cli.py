"""`bench`: each command builds a config, calls one library function and prints the result."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

import priors
from bench import records, report as report_lib, tables
from bench.cli_check import check_prior
from bench.cli_common import out_console, print_comparison, user_errors
from bench.progress import err_console
from bench.cli_data import data_app
from bench.cli_perf import perf
from bench.cli_score import score
from bench.cli_sweep import sweep
from bench.errors import BenchError
from bench.run import RunConfig, RunResult, run_seeds
from bench.scoring import REAL_SIDE

app = typer.Typer(help="Benchmark generative priors over the codes of a frozen VQ-VAE.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data_app, name="data", help="Inspect datasets.")
app.command("perf")(perf)
app.command("check-prior")(check_prior)
app.command("score")(score)
app.command("sweep")(sweep)

RESULTS = Path("results")


def parse_seeds(text: str | None, seed: int) -> list[int]:
    """The seeds to run: those of --seeds ('0,1,2': distinct, >= 0) when given, else --seed."""
    if text is None:
        seeds = [seed]
    else:
        try:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise BenchError(f"--seeds must be comma-separated integers like 0,1,2, "
                             f"got {text!r}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise BenchError(f"--seeds must list distinct integers like 0,1,2, got {text!r}")
    if min(seeds) < 0:
        raise BenchError(f"seeds must be >= 0, got {min(seeds)}")
    return seeds


@app.command()
@user_errors
def run(
    prior: str = typer.Option("pixelcnn", help="Prior name (see `bench priors`)."),
    dataset: str = typer.Option("mni", help="mni | oasis:PATH | adni:PATH | folder:PATH | nifti:PATH"),
    preset: str = typer.Option("quick", help="tiny (tests) | quick, standard (2 CPU cores) | "
                                             "full (GPU) | path/to/preset.toml"),
    seed: int = typer.Option(0, help="Seed of the prior (training and sampling)."),
    seeds: Optional[str] = typer.Option(None, help="Several seeds, e.g. 0,1,2 (overrides --seed)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    out: Path = typer.Option(RESULTS, help="Results folder."),
    extractor: str = typer.Option("mri", help="Features for FD/KID/PR: mri | inception"),
    fid_weights: Optional[Path] = typer.Option(None, help="Inception weights file (offline)."),
    condition: str = typer.Option("none", help="none | label (class-conditional priors)."),
    n_samples: int = typer.Option(0, help="Samples to score (0 = the preset's)."),
    skip_bad: bool = typer.Option(False, help="Skip unusable or misnamed files, named in a note, instead of failing."),
    force: bool = typer.Option(False, help="Rebuild every stage (data cache, backbone, export, "
                                           "fit, run) and overwrite the finished run."),
    force_from: Optional[str] = typer.Option(None, help="Rebuild this stage and the later ones, "
                                             "reusing the earlier: data | backbone | export | "
                                             "fit | run (run: sample and score the stored fit "
                                             "again)."),
    threads: int = typer.Option(0, help="torch intra-op CPU threads (0 = torch's default)."),
    checkpoint_every: float = typer.Option(60.0, help="Seconds between training checkpoints "
                                                      "(a killed run resumes from the last one)."),
    precision: Optional[str] = typer.Option(None, help="Training precision of backbone and "
                                            "prior: fp32 | bf16 | auto [default: the preset's]."),
    ddp_timeout: float = typer.Option(3600.0, help="Under torchrun: seconds a rank waits for "
                                                   "the others before it fails."),
) -> None:
    """Train (or reuse) the backbone, fit PRIOR on its codes, sample, score, save a record."""
    set_threads(threads)
    cfg = RunConfig(prior=prior, dataset=dataset, preset=preset, seed=seed, device=device,
                    out=out, extractor=extractor, fid_weights=fid_weights,
                    condition=condition, n_samples=n_samples, force=force, force_from=force_from,
                    skip_bad=skip_bad,
                    checkpoint_every_s=checkpoint_every, precision=precision,
                    ddp_timeout_s=ddp_timeout)
    for result in run_seeds(cfg, parse_seeds(seeds, seed)):
        print_scores(result)


def set_threads(threads: int) -> None:
    if threads < 0:
        raise BenchError(f"--threads must be >= 0 (0 = torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)


def print_scores(result: RunResult) -> None:
    """The run's scores beside the two ceiling rows, under the backbone's line."""
    record = result.record
    out_console.print(tables.record_backbone_line(record))
    table = Table(title=f"{record['prior']} · seed {record['seed']} · {result.directory}")
    table.add_column("score")
    rows = (record, *result.ceilings)
    for r in rows:
        table.add_column(r["prior"], justify="right")
    keys = list(dict.fromkeys(k for r in rows for k in r["scores"]))
    for key in keys:
        values = [r["scores"].get(key) for r in rows]
        table.add_row(tables.score_name(key, record["extractor"]["name"]),
                      *("" if v is None else f"{v:.4g}" for v in values))
    out_console.print(table)


@app.command()
@user_errors
def compare(out: Path = typer.Option(RESULTS, help="Results folder to read and write into."),
            sources: Optional[list[Path]] = typer.Option(
                None, "--from", help="Results folder whose finished records are first carried "
                "into OUT/records (plain JSON, no samples or weights); repeatable."),
            force: bool = typer.Option(False, help="Replace a carried record that differs.")) -> None:
    """Table of every run under the results folder (its own runs and the records carried into
    it); writes comparison.{md,csv,tex,json}."""
    warn = lambda text: err_console.print(f"[yellow]warning:[/] {text}")  # noqa: E731
    for source in sources or []:  # every source checked before anything is carried
        if not (source / "runs").is_dir() and not (source / records.CARRIED).is_dir():
            raise BenchError(f"--from {source}: not a results folder (no runs/ or records/ in it)")
        if source.resolve() == out.resolve():
            raise BenchError(f"--from {source}: is the folder being written (OUT); name another")
    for source in sources or []:
        found = records.collect(source, warn=warn)
        current = [r for r in found if r.get("real_side") == REAL_SIDE]
        if len(current) < len(found):
            warn(f"not carried: {len(found) - len(current)} record(s) of {source} scored under an "
                 f"older definition; run `bench migrate --out {source}` and re-run them first")
        written = records.carry(current, out, force=force, warn=warn)
        out_console.print(f"carried {len(written)} of {len(found)} record(s) from {source} "
                          f"into {out / records.CARRIED}")
    print_comparison(out)


@app.command()
@user_errors
def report(out: Path = typer.Option(RESULTS, help="Results folder to read."),
           to: Optional[Path] = typer.Option(None, help="Report folder (default OUT/report).")) -> None:
    """Markdown report with PNG figures: tables, samples, code maps, curves, codebook."""
    path = report_lib.write_report(out, to, warn=lambda t: err_console.print(f"[yellow]warning:[/] {t}"))
    out_console.print(f"wrote {path}")


@app.command()
@user_errors
def migrate(out: Path = typer.Option(RESULTS, help="Results folder to migrate in place.")) -> None:
    """Bring a results folder of an earlier version up to date without refitting: the fitted
    priors of old runs become fit artefacts, records of an older scoring definition move to
    OUT/superseded/runs. Re-run the same `bench run` commands afterwards to re-score."""
    if not out.is_dir():
        raise BenchError(f"{out} is not a results folder (no such directory)")
    from bench.migrate import migrate as migrate_folder
    done = migrate_folder(out)
    for item in done.skipped:
        err_console.print(f"[yellow]warning:[/] left in place: {item}")
    out_console.print(f"{len(done.fits)} fit(s) written, {len(done.found)} already stored; "
                      f"{len(done.moved)} record(s) moved to {out / 'superseded' / 'runs'}")


@app.command("priors")
@user_errors
def list_priors() -> None:
    """List registered priors (built-ins and entry points in group `bench.priors`)."""
    table = Table()
    for col in ("name", "likelihood", "conditional", "module"):
        table.add_column(col)
    for name in priors.available_priors():
        cls = priors.get_prior(name)
        table.add_row(name, "yes" if cls.has_likelihood else "no",
                      "yes" if cls.conditional else "no", cls.__module__)
    out_console.print(table)
    for name, why in priors.REGISTRY.load_errors.items():
        out_console.print(f"[red]entry point {name!r} failed to load:[/] {why}")
