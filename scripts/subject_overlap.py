"""Why the reference row comes from other test subjects than the real side: FD-mri and KID of
the two ceiling rows against n decoded test codes, with the reference drawn (a) from the same
test subjects as the real side (the definition before subject halves: disjoint images, shared
subjects) and (b) from the other half of the test subjects (`bench.scoring.subject_halves`,
what `bench run` does now), for a few seeds. From cached artefacts only.
Usage: python scripts/subject_overlap.py OUT SPEC PRESET N [--precision P]
Example: python scripts/subject_overlap.py results mni quick 250 --precision fp32"""
import sys

import numpy as np
import torch

from bench.metrics.distribution import frechet_distance, kid
from bench.scoring import subject_halves
from cached_setting import CPU as cpu, cached_setting, precision_arg
from vqvae.train import decode_codes


def main(out: str, spec: str, preset_name: str, n: int, precision: str | None,
         seeds: range = range(4)) -> None:
    _, _, sh, ex = cached_setting(out, spec, preset_name, precision)
    test, codes = sh.ds.splits["test"], sh.export.codes
    subjects = np.asarray(test.subjects)
    print(f"test: {len(test)} images of {len(set(subjects))} subjects; n = {n}")

    def feats(split: str, idx: np.ndarray) -> np.ndarray:
        picked = codes[split][torch.from_numpy(np.sort(idx))]
        return ex.features(decode_codes(sh.model, picked, device=cpu))

    def row(name: str, a: np.ndarray, b: np.ndarray) -> None:
        print(f"  {name:58s} FD-mri {frechet_distance(a, b):7.4f}  KID {kid(a, b)[0]:8.5f}")

    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(test))
        shared_real, shared_ref = order[:n], order[n:2 * n]
        half_a, half_b = subject_halves(subjects, test.labels, seed)
        real, ref = rng.choice(half_a, n, replace=False), rng.choice(half_b, n, replace=False)
        train = feats("train", rng.choice(len(sh.ds.splits["train"]), n, replace=False))
        print(f"seed {seed}")
        f_shared = feats("test", shared_real)
        shared = len(set(subjects[shared_real]) & set(subjects[shared_ref]))
        row(f"(a) reference, {shared} subjects shared with the real side",
            f_shared, feats("test", shared_ref))
        row("(a) decoded train grids", f_shared, train)
        f_real = feats("test", real)
        row("(b) reference from the other half of the test subjects", f_real, feats("test", ref))
        row("(b) decoded train grids", f_real, train)


if __name__ == "__main__":
    args, precision = precision_arg(sys.argv)
    if len(args) != 5:
        sys.exit(__doc__)
    main(args[1], args[2], args[3], int(args[4]), precision)
