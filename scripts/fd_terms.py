"""FD split into its mean and covariance terms for the rows of one setting, from cached
artefacts only (the README's "What FD and KID see besides the prior" table).
Usage: python scripts/fd_terms.py OUT SPEC PRESET PRIOR...
Example: python scripts/fd_terms.py results-adni adni:../shared/data/adni/AD_NC quick unigram uniform"""
import glob
import sys

import numpy as np
import torch

from bench.metrics.distribution import frechet_distance, kid
from bench.presets import get_preset
from bench.progress import RichProgress
from bench.run import RunConfig, open_store, prepare_shared, scoring_context
from bench.stages import StageContext, stage_extractor
from bench.store import load_tensors
from vqvae.train import decode_codes, to_float


def main(out: str, spec: str, preset_name: str, prior_names: list[str], n: int = 500) -> None:
    cpu = torch.device("cpu")
    cfg, preset = RunConfig(dataset=spec, out=out, preset=preset_name, device="cpu"), get_preset(preset_name)
    sc = StageContext(store=open_store(cfg.out), device=cpu, progress=RichProgress(enabled=False))
    sh = prepare_shared(cfg, preset, sc)  # every stage must be cached: run `bench run` first
    ex = stage_extractor("mri", sh.ds, seed=0, preset=preset.base, weights_path=None, sc=sc)
    test = sh.ds.splits["test"]
    ctx, B = scoring_context(cfg, sh, ex, n, sc)  # the real side (A) and the rest, as `bench run`
    fa = ctx.real_feats
    rows = {"other real test images": ex.features(to_float(np.asarray(test.images[B]), cpu)),
            "recon of held-out test": ex.features(decode_codes(sh.model, sh.export.codes["test"][B], device=cpu))}
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
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
