"""Config variants of one prior, each fitted on a stored setting's code export and judged on the
scores that show collapse: FD-mri, precision / recall, code perplexity and JS against the test
codes (the slow nearest-SSIM scores are left out). For choosing a preset's prior config by
measurement; nothing is written to the store.

    python scripts/prior_sweep.py OUT SPEC PRESET PRIOR VARIANT [VARIANT ...] [--precision P]

VARIANT is `field=value,field=value` over the preset's config of PRIOR (`-` for that config as
it is). Values are parsed as Python literals (1500, 2e-4, True, 'argmax'). Each variant is fitted
with seed 0 and draws the preset's sample count with seed 0, like `bench run`.
"""
import ast
import dataclasses
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import priors
from bench import metrics
from bench.run import n_scored, scoring_context
from bench.sampling import sample_prior
from vqvae import decode_codes

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import CPU, cached_setting, fit_config, script_args  # noqa: E402


def parse_variant(text: str) -> dict:
    if text == "-":
        return {}
    fields = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"variant item {item!r} is not field=value")
        try:
            fields[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            fields[key.strip()] = value.strip()  # a bare word: a string
    return fields


def main() -> None:
    argv, precision = script_args(__doc__, 5)
    out, spec, preset_name, prior_name, *variants = argv
    cfg, sc, shared, extractor = cached_setting(out, spec, preset_name, precision)
    cls = priors.get_prior(prior_name)
    base = shared.preset.prior_config(cls)
    export = shared.export
    n = n_scored(cfg, shared.preset, shared.ds)
    ctx, _ = scoring_context(cfg, shared, extractor, n, sc)
    console = Console(width=150)  # the table whole, also when written to a file
    table = Table(title=f"{prior_name} variants on {out} ({spec}, preset {preset_name}, {n} samples)")
    for col in ("variant", "fit s", "FD-mri", "precision", "recall", "perplexity", "JS(codes)",
                "codes used"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    data = metrics.code_usage(ctx.test_code_counts, ctx.test_code_counts)
    rows = [("test codes", "", "", "", "", f"{data['code_perplexity']:.1f}", "0",
             f"{data['distinct_codes']:.0f}")]
    for text in variants:
        config = dataclasses.replace(base, **parse_variant(text))
        prior, _, fit_s = fit_config(cls, config, export, sc.progress)
        codes = sample_prior(prior, n, seed=0, labels=None)
        feats = extractor.features(decode_codes(shared.model, codes, device=CPU))
        prec, rec = metrics.precision_recall(ctx.real_feats, feats)
        usage = metrics.code_usage(metrics.code_histogram(codes, export.num_codes),
                                   ctx.test_code_counts)
        row = (text, f"{fit_s:.0f}", f"{metrics.frechet_distance(ctx.real_feats, feats):.2f}",
               f"{prec:.3f}", f"{rec:.3f}", f"{usage['code_perplexity']:.1f}",
               f"{usage['code_js_bits']:.4f}", f"{usage['distinct_codes']:.0f}")
        rows.append(row)
        console.print("  ".join(row), highlight=False)  # each variant as it finishes
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"base config: {base}", highlight=False)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
