"""FD against the scoring real side split into its mean and covariance terms for the rows of
one setting, from cached artefacts only.
Usage: python scripts/fd_terms.py OUT SPEC PRESET PRIOR... [--precision P]
Example: python scripts/fd_terms.py results-adni2 adni:../shared/data/adni/AD_NC quick unigram --precision fp32"""
import glob
import sys

import numpy as np
import torch

from bench.metrics.distribution import frechet_distance, kid
from bench.run import scoring_context
from bench.scoring import subject_halves
from bench.store import load_tensors
from cached_setting import CPU as cpu, cached_setting, precision_arg
from vqvae.train import decode_codes, to_float


def main(out: str, spec: str, preset_name: str, prior_names: list[str], n: int = 500,
         precision: str | None = None) -> None:
    cfg, sc, sh, ex = cached_setting(out, spec, preset_name, precision)
    test = sh.ds.splits["test"]
    n = min(n, *(len(h) for h in subject_halves(test.subjects, test.labels, cfg.backbone_seed)))
    ctx, B = scoring_context(cfg, sh, ex, n, sc)  # the real side (A) and the reference's, as `bench run`
    fa = ctx.real_feats
    rows = {"other real test images": ex.features(to_float(np.asarray(test.images[B]), cpu)),
            "recon of other test subjects": ex.features(decode_codes(sh.model, sh.export.codes["test"][B], device=cpu))}
    pick = np.sort(np.random.default_rng(1).permutation(len(sh.ds.splits["train"]))[:n])
    rows["decoded train grids"] = ex.features(decode_codes(sh.model, sh.export.codes["train"][torch.from_numpy(pick)],
                                                           device=cpu))
    for prior in prior_names:
        codes = load_tensors(glob.glob(f"{out}/runs/{prior}-*/artefacts.safetensors")[0])["samples/codes"]
        rows[f"{prior} samples"] = ex.features(decode_codes(sh.model, codes[:n], device=cpu))
    mu_a = fa.mean(0)
    print(f"real A: trace(cov) {np.trace(np.cov(fa, rowvar=False)):.3f}")
    for name, f in rows.items():
        fd, mean_term = frechet_distance(fa, f), float(((f.mean(0) - mu_a) ** 2).sum())
        print(f"{name:26s} FD {fd:7.3f} = mean term {mean_term:7.3f} + cov term {fd - mean_term:7.3f}; "
              f"trace(cov) {np.trace(np.cov(f, rowvar=False)):6.3f}; KID {kid(fa, f, seed=0)[0]:.4f}")


if __name__ == "__main__":
    args, precision = precision_arg(sys.argv)
    if len(args) < 4:
        sys.exit(__doc__)
    main(args[1], args[2], args[3], args[4:], precision=precision)
