"""Everything `bench run` does after a prior's fit, timed again on a stored fit: test bits/code,
sampling + decoding, and scoring (the record's `timing`), with the scores checked equal to the
stored run's. For timing on a quiet machine what a run measured beside other jobs (2 cores
shared by two processes ran the nearest-SSIM search 5-13x slower than alone).

    python scripts/after_fit_times.py OUT SPEC PRESET PRIOR [--precision P]

The run of PRIOR (seed 0, unconditional, mri features, the preset's sample count) must be in
OUT; nothing is written. Scoring's parts are timed as `bench.scoring.score_samples` runs them.
"""
import dataclasses
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import metrics
from bench.run import (build_prior, n_scored, run_artefact, sample_and_score,
                       scoring_context, stage_fit)
from bench.sampling import bits_per_code_on, code_set
from bench.store import read_json
from bench.timing import timed
from vqvae import decode_codes

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import CPU, cached_setting, script_args  # noqa: E402


def main() -> None:
    argv, precision = script_args(__doc__, 4, 4)
    out, spec, preset_name, prior_name = argv
    base, sc, shared, extractor = cached_setting(out, spec, preset_name, precision)
    cfg = dataclasses.replace(base, prior=prior_name)
    preset = shared.preset
    prior = build_prior(cfg, preset, shared.export, CPU)
    fitted = stage_fit(cfg, preset, prior, shared.export, sc)  # found: the store is read-only
    n = n_scored(cfg, preset, shared.ds)
    ctx, _ = scoring_context(cfg, shared, extractor, n, sc)
    stored = read_json(sc.store.dir(run_artefact(cfg, preset, prior, shared.export, extractor.id, n))
                       / "record.json")

    bits_s, bits = timed(lambda: bits_per_code_on(prior, code_set(shared.export, "test", False)), CPU)
    record, tensors = sample_and_score(cfg, prior, fitted, shared, ctx, n, sc)  # times itself
    images = decode_codes(shared.model, tensors["samples/codes"], device=CPU)
    parts = {}
    parts["features (mri)"], feats = timed(lambda: extractor.features(images), CPU)
    parts["NN-SSIM vs real side"], _ = timed(lambda: metrics.nn_ssim(images, ctx.real), CPU)
    if ctx.train is not None:
        parts["memorised share vs train"], _ = timed(
            lambda: metrics.memorised_share(images, ctx.train, ctx.memorised_above), CPU)
    parts["FD, precision/recall"], _ = timed(lambda: (
        metrics.frechet_distance(ctx.real_feats, feats),
        metrics.precision_recall(ctx.real_feats, feats)), CPU)

    timing = record["timing"]
    console = Console()
    table = Table(title=f"{prior_name} after its fit ({out}, preset {preset_name}, {n} samples)")
    for col in ("part (scoring's parts timed again alone)", "s now", "s in the record"):
        table.add_column(col, justify="left" if col.startswith("part") else "right")
    table.add_row("test bits/code", f"{bits_s:.1f}", _s(stored["timing"].get("bits_s")))
    table.add_row("sampling + decoding", f"{timing['sample_s']:.1f}", _s(stored["timing"]["sample_s"]))
    table.add_row("scoring", f"{timing['score_s']:.1f}", _s(stored["timing"]["score_s"]))
    table.add_row("[b]after the fit[/]", f"[b]{bits_s + timing['sample_s'] + timing['score_s']:.1f}[/]",
                  _s(stored["timing"].get("after_fit_s")))
    for name, s in parts.items():
        table.add_row(f"  scoring: {name}", f"{s:.1f}", "")
    console.print(table)
    console.print(f"1-minute load average before sampling / after scoring: {timing['load_avg']} "
                  f"on {timing['cpu_count']} logical cores (alone: about the run's own threads)")
    differ = {k: v for k, v in record["scores"].items()  # samples/s is a timing
              if k in stored["scores"] and k != "samples_per_s" and not _equal(v, stored["scores"][k])}
    same_bits = math.isclose(bits, stored["scores"]["bits_per_code"], rel_tol=1e-9, abs_tol=1e-12) \
        if stored["scores"].get("bits_per_code") is not None else True
    console.print("scores equal to the stored record's" if not differ and same_bits
                  else f"[red]scores differ from the stored record's:[/] {differ} bits {bits}")


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _s(value) -> str:
    return "" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
