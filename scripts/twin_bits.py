"""Does a fitted prior score better on test subjects that are twins of training subjects (one
scan stored under two IDs, `bench data inspect`)? Bits/code of a stored fit on four sets of
grids: the test twins, their training twins, and 30 other subjects of each split (seeded).
A prior that had memorised its training grids would score its training twins, and through
them the test twins, well below the other test subjects. From cached artefacts only.

    python scripts/twin_bits.py OUT SPEC PRESET PRIOR [SEED] [--precision P]

Example: python scripts/twin_bits.py results-std adni:../shared/data/adni/AD_NC standard transformer 0
"""
import dataclasses
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.data.inspect import twin_pairs
from bench.run import build_prior, stage_fit
from bench.sampling import bits_per_code_on
from priors import CodeSet

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import CPU, cached_setting, script_args  # noqa: E402

OTHERS = 30  # subjects of each split drawn for comparison


def grids_of(subjects: np.ndarray, chosen: set[str]) -> np.ndarray:
    return np.flatnonzero(np.isin(subjects, sorted(chosen)))


def main() -> None:
    argv, precision = script_args(__doc__, 4, 5)
    out, spec, preset_name, prior_name = argv[:4]
    base, sc, shared, _ = cached_setting(out, spec, preset_name, precision)
    cfg = dataclasses.replace(base, prior=prior_name, seed=int(argv[4]) if len(argv) == 5 else 0)
    prior = build_prior(cfg, shared.preset, shared.export, CPU)
    stage_fit(cfg, shared.preset, prior, shared.export, sc)  # found: the store is read-only
    pairs = twin_pairs(shared.ds, "test")
    if not pairs:
        sys.exit(f"{spec}: no test subject has a twin in train")
    rng = np.random.default_rng(0)
    table = Table(title=f"{prior_name} seed {cfg.seed} ({spec}, preset {preset_name}): "
                        f"bits/code by subject set")
    for col in ("grids", "subjects", "slices", "bits/code"):
        table.add_column(col, justify="left" if col == "grids" else "right")
    twins = {"test": {t for t, _, _ in pairs}, "train": {m for _, m, _ in pairs}}
    for split in ("test", "train"):
        subjects = np.asarray(shared.ds.splits[split].subjects).astype(str)
        others = sorted(set(subjects) - twins[split] - twins["train"])
        drawn = set(rng.choice(others, min(OTHERS, len(others)), replace=False).tolist())
        for label, chosen in ((f"{split}: the twins", twins[split]),
                              (f"{split}: {len(drawn)} other subjects", drawn)):
            idx = grids_of(subjects, chosen)
            codes = shared.export.codes[split][idx]
            bits = bits_per_code_on(prior, CodeSet(codes, shared.export.num_codes))
            table.add_row(label, str(len(chosen)), str(len(idx)), f"{bits:.4f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
