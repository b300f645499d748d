"""Would evaluating a stored fit in bf16 make the test bits/code fast enough, and what would it
change? Times the bits/code of N seeded test grids in fp32 (what `bench run` reports) and under
CPU bf16 autocast, alternately, best of ROUNDS each, and prints both values. From cached
artefacts only.

    python scripts/eval_precision.py OUT SPEC PRESET PRIOR N [SEED] [ROUNDS] [--precision P]

Example: python scripts/eval_precision.py results-std adni:../shared/data/adni/AD_NC standard transformer 512
"""
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench.run import build_prior, stage_fit
from bench.sampling import bits_per_code_on, code_set
from priors import CodeSet
from trainkit import train_autocast

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import CPU, cached_setting, script_args  # noqa: E402


def main() -> None:
    argv, precision = script_args(__doc__, 5, 7)
    out, spec, preset_name, prior_name, n = argv[:5]
    seed = int(argv[5]) if len(argv) > 5 else 0
    rounds = int(argv[6]) if len(argv) > 6 else 2
    base, sc, shared, _ = cached_setting(out, spec, preset_name, precision)
    cfg = dataclasses.replace(base, prior=prior_name, seed=seed)
    prior = build_prior(cfg, shared.preset, shared.export, CPU)
    stage_fit(cfg, shared.preset, prior, shared.export, sc)  # found: the store is read-only
    test = code_set(shared.export, "test", False)
    idx = np.sort(np.random.default_rng(0).choice(len(test.codes), int(n), replace=False))
    grids = CodeSet(test.codes[torch.from_numpy(idx)], test.num_codes)
    best: dict[str, float] = {}
    bits: dict[str, float] = {}
    for _ in range(rounds):
        for mode in ("fp32", "bf16"):
            t0 = time.perf_counter()
            with train_autocast(CPU, mode):
                bits[mode] = bits_per_code_on(prior, grids)
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - t0)
    table = Table(title=f"{prior_name} seed {seed} ({spec}, preset {preset_name}): test "
                        f"bits/code of {len(idx)} grids, best of {rounds}, "
                        f"{torch.get_num_threads()} threads")
    for col in ("evaluated in", "bits/code", "s", "grids/s", "speed-up"):
        table.add_column(col, justify="right")
    for mode in ("fp32", "bf16"):
        table.add_row(mode, f"{bits[mode]:.4f}", f"{best[mode]:.1f}",
                      f"{len(idx) / best[mode]:.1f}", f"{best['fp32'] / best[mode]:.2f}x")
    Console(width=160).print(table)
    print(f"bf16 - fp32: {bits['bf16'] - bits['fp32']:+.4f} bits/code; the whole test split "
          f"({len(test.codes)} grids) would take {len(test.codes) / len(idx) * best['fp32']:.0f} s "
          f"in fp32, {len(test.codes) / len(idx) * best['bf16']:.0f} s in bf16")


if __name__ == "__main__":
    main()
