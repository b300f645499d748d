"""`bench perf`: machine-use numbers for the current device, as rich tables and JSON.

`bench.cli` mounts `perf`; `perf_app` is the command on its own (the tests invoke it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from bench.cli_common import option_errors, out_console, user_errors
from bench.errors import BenchError
from bench.perf import PerfConfig, PerfSizes, parse_sections, perf_sizes, run_perf
from bench.progress import RichProgress, err_console


@user_errors
def perf(
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    preset: str = typer.Option("quick", help="Sizes: tiny (tests) | quick, standard (CPU) | "
                                             "full (GPU) | path/to/preset.toml"),
    sections: str = typer.Option("backbone,precision,sampling,data,features,scoring",
                                 help="Comma-separated: backbone,precision,sampling,data,"
                                      "features,peer,scoring,bits"),
    dataset: str = typer.Option("mni", help="Dataset spec for loading, backbone, features, peer."),
    peer: Optional[str] = typer.Option(None, help="Race our backbone against a peer: monai "
                                       "(adds the peer section)."),
    grids: Optional[str] = typer.Option(None, help="Code grid sides for sampling, e.g. 16,32,64 "
                                        "[default: the preset's]."),
    run_grids: Optional[str] = typer.Option(None, help="Grid sides also sampled 256 at a time, "
                                            "as bench run does; 'none' skips [default: the "
                                            "preset's]."),
    max_naive_s: Optional[float] = typer.Option(None, help="Naive sampling timing budget per "
                                                "prior and grid, s; the rest is extrapolated."),
    peer_budget_s: Optional[float] = typer.Option(None, help="Training budget of each backbone "
                                                  "in the peer race, s."),
    precision_priors: str = typer.Option("pixelcnn", help="Network priors whose fp32 and bf16 "
                                         "training steps/s the precision section times, e.g. "
                                         "pixelcnn,maskgit."),
    threads: int = typer.Option(0, help="torch intra-op threads (0 = torch's default)."),
    seed: int = typer.Option(0, help="Seed of model init, batch order and sampling."),
    out: Optional[Path] = typer.Option(None, help="JSON report [default: "
                                       "results/perf-<device>.json]."),
    cache_dir: Path = typer.Option(Path("results/.cache"), help="Data and extractor cache."),
) -> None:
    """Backbone images/s and FLOP/s share, cached vs naive sampling, data loading, features."""
    with option_errors():
        sizes = sized(preset, grids, max_naive_s, peer_budget_s, run_grids)
        cfg = PerfConfig(preset=preset, device=device, sections=parse_sections(sections, peer),
                         dataset=dataset, peer=peer or "monai", sizes=sizes, threads=threads,
                         precision_priors=tuple(n.strip() for n in precision_priors.split(",")
                                                if n.strip()),
                         seed=seed, out=out, cache_dir=cache_dir)
    result = run_perf(cfg, progress=RichProgress())
    print_report(result.report)
    err_console.print(f"wrote {result.path}")


def _sides(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise BenchError(f"{option} must be comma-separated sides like 16,32,64, "
                         f"got {text!r}") from None


def sized(preset: str, grids: str | None, max_naive_s: float | None,
          peer_budget_s: float | None, run_grids: str | None = None) -> PerfSizes:
    """The preset's PerfSizes with the options given on the command line replaced."""
    changes: dict[str, Any] = {}
    if grids is not None:
        changes["grids"] = _sides("--grids", grids)
    if run_grids is not None:
        changes["run_grids"] = () if run_grids.strip() == "none" else _sides("--run-grids",
                                                                             run_grids)
    if max_naive_s is not None:
        changes["max_naive_s"] = max_naive_s
    if peer_budget_s is not None:
        changes["peer_budget_s"] = peer_budget_s
    return dataclasses.replace(perf_sizes(preset), **changes)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return table


def print_report(report: dict[str, Any]) -> None:
    head = f"{report['device']} · preset {report['preset']}"
    load = report["load_average"]
    for name, printer in PRINTERS.items():
        if name in report:
            title = f"{name} · {head} · load {load[name][0]:.1f}"
            out_console.print(printer(report[name], title))


def _backbone(b: dict[str, Any], title: str) -> Table:
    rows = [["images/s", b["images_per_s"]], ["steps timed", b["steps"]],
            ["batch, px", f"{b['batch_size']}, {b['resolution']}"],
            ["GFLOP per step (fwd+bwd)", b["flops_per_step"] / 1e9],
            ["achieved GFLOP/s", b["achieved_flops_per_s"] / 1e9]]
    for dtype, peak in b["matmul_peak"].items():
        rows += [[f"{dtype} matmul peak GFLOP/s (n={peak['n']:.0f})",
                  peak["best_flops_per_s"] / 1e9],
                 [f"share of {dtype} peak", b[f"share_of_{dtype}_matmul_peak"]]]
    return _table(title, ["backbone training", "value"], rows)


def _sampling(rows: list[dict[str, Any]], title: str) -> Table:
    """One row per prior and grid; * marks a naive time extrapolated from the first positions."""
    return _table(title, ["prior", "grid", "n", "cached s", "naive s", "naive/cached",
                          "forward passes per grid", "naive positions timed", "same codes"],
                  [[r["prior"], f"{r['grid']}x{r['grid']}", int(r["n"]), r["cached_s"],
                    f"{r['naive_s']:.4g}" + ("*" if r["naive_extrapolated"] else ""),
                    r["speedup"], r["cost_forward_equivalents"],
                    f"{r['naive_positions_timed']}/{r['naive_positions']}",
                    "yes" if r["identical"] else "NO"] for r in rows])


def _data(d: dict[str, Any], title: str) -> Table:
    return _table(title, ["data loading", "images", "s", "images/s"],
                  [[f"cold ({d['spec']}, {d['resolution']} px)", d["n_images"], d["cold_s"],
                    d["cold_images_per_s"]],
                   ["warm (cache + full read)", d["n_images"], d["warm_s"] + d["warm_read_s"],
                    d["warm_images_per_s"]]])


def _features(f: dict[str, Any], title: str) -> Table:
    return _table(title, ["features", "images", "s", "images/s", "build s"],
                  [[f"{f['extractor']} ({f['extractor_id']})", f["n_images"], f["wall_s"],
                    f["images_per_s"], f["build_s"]]])


def _peer(p: dict[str, Any], title: str) -> Table:
    """One row per contender; a degenerate one is flagged and gets no speed ratio."""
    title += (f" · {p['budget_s']:.3g} s each, batch {p['batch_size']}, {p['resolution']} px, "
              f"{p['precision']}, {p['optimizer']}")
    ratio = p.get("images_per_s_ratio")
    return _table(title,
                  ["backbone", "parameters", "GFLOP/step", "steps", "images/s", "images/s vs ours",
                   "final train MSE", "codes used", "recon SSIM", "verdict"],
                  [[name, c["n_parameters"], c["flops_per_step"] / 1e9, c["steps"],
                    c["images_per_s"], _speed(name, ratio),
                    c["final_train_mse"], f"{c['codes_used']}/{c['num_codes']}", c["recon_ssim"],
                    "ok" if c["degenerate"] is None else f"degenerate: {c['degenerate']}"]
                   for name, c in p["contenders"].items()])


def _speed(name: str, ratio: float | None) -> str:
    """A peer's images/s over ours; '-' when the race gave no ratio (a degenerate contender)."""
    if ratio is None:
        return "-"
    return "1x" if name == "ours" else f"{ratio:.3g}x"


def _scoring(s: dict[str, Any], title: str) -> Table:
    """All-pairs seconds are scaled from the queries timed (`bench.perf_scoring`)."""
    title += f" · {s['resolution']} px, {s['threads']} threads"
    return _table(title, ["score", "queries x refs", "search s", "all pairs s (scaled)", "speedup",
                          "pairs scored (share)", "max |diff| vs float32"],
                  [[name, f"{c['queries']} x {c['refs']}", c["fast_s"], c["all_pairs_s_scaled"],
                    c["speedup"], c["exact_pairs_share_timed_queries"],
                    c["max_abs_diff_vs_float32_all_pairs"]]
                   for name, c in s.items() if isinstance(c, dict)])


def _precision(p: dict[str, Any], title: str) -> Table:
    """fp32 and bf16 steps/s side by side (best run of each) and their ratio."""
    if not p["bf16_native"]:
        return _table(title, ["training precision"], [[p["note"]]])
    title += f" · {p['steps_per_run']} steps x {p['rounds']} rounds each, {p['resolution']} px"
    return _table(title, ["training", "batch", "fp32 steps/s", "bf16 steps/s", "bf16 speed-up",
                          "median of round ratios"],
                  [[name, c["batch_size"], c["fp32_steps_per_s"], c["bf16_steps_per_s"],
                    f"{c['bf16_speedup']:.3g}x", f"{c['bf16_speedup_median_of_rounds']:.3g}x"]
                   for name, c in p["contenders"].items()])


def _bits(b: dict[str, Any], title: str) -> Table:
    """Per prior and precision: the test split's seconds at the measured rate and at the matmul
    peak (the floor), the rate's share of that peak."""
    n = b["test_grids"]
    title += (f" · {b['grid']}x{b['grid']} grids, K = {b['num_codes']}, {b['grids_timed']} grids "
              f"timed, {b['batch']} a call")
    return _table(title, ["test bits/code", "parameters", "GFLOP/grid", "grids/s",
                          f"s for {n} test grids", "floor s (at matmul peak)", "share of peak"],
                  [[f"{r['prior']} ({p})", r["n_parameters"], r["flops_per_grid"] / 1e9,
                    r[f"{p}_grids_per_s"], r[f"{p}_test_s"], r[f"{p}_floor_s"],
                    r[f"share_of_{p}_matmul_peak"]]
                   for r in b["priors"] for p in b["matmul_peak"]])


PRINTERS = {"backbone": _backbone, "precision": _precision, "sampling": _sampling, "data": _data,
            "features": _features, "peer": _peer, "scoring": _scoring, "bits": _bits}

perf_app = typer.Typer(help="Machine-use numbers of the benchmark.", add_completion=False,
                       pretty_exceptions_enable=False)
perf_app.command("perf")(perf)
