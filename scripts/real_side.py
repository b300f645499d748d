"""FD-mri and KID of one setting's rows against two real sides: the test images themselves,
and the backbone's decodings of their codes (what `bench run` compares with). From cached
artefacts only (the README's "Compared with decoded test codes" table).
Usage: python scripts/real_side.py OUT SPEC PRESET PRIOR... [--precision P]
Example: python scripts/real_side.py results-std adni:../shared/data/adni/AD_NC standard uniform"""
import glob
import sys

import numpy as np
import torch

from bench.metrics.distribution import frechet_distance, kid
from bench.store import load_tensors
from cached_setting import CPU as cpu, cached_setting, precision_arg
from vqvae.train import decode_codes, to_float


def main(out: str, spec: str, preset_name: str, prior_names: list[str], n: int = 500,
         precision: str | None = None) -> None:
    _, _, sh, ex = cached_setting(out, spec, preset_name, precision)
    test, codes = sh.ds.splits["test"], sh.export.codes
    order = np.random.default_rng(7).permutation(len(test))
    a, b = np.sort(order[:n]), np.sort(order[n:2 * n])

    def decoded(c: torch.Tensor) -> np.ndarray:
        return ex.features(decode_codes(sh.model, c, device=cpu))

    sides = {"test images A": ex.features(to_float(np.asarray(test.images[a]), cpu)),
             "decoded test codes of A": decoded(codes["test"][torch.from_numpy(a)])}
    rows = {"real test images B": ex.features(to_float(np.asarray(test.images[b]), cpu)),
            "recon of test images B": decoded(codes["test"][torch.from_numpy(b)])}
    pick = np.sort(np.random.default_rng(1).permutation(len(sh.ds.splits["train"]))[:n])
    rows["decoded training grids"] = decoded(codes["train"][torch.from_numpy(pick)])
    for prior in prior_names:
        path = sorted(glob.glob(f"{out}/runs/{prior}-*/artefacts.safetensors"))[0]
        rows[f"{prior} samples"] = decoded(load_tensors(path)["samples/codes"][:n])
    for side, fa in sides.items():
        print(f"--- vs {side}")
        for name, fb in rows.items():
            print(f"{name:26s} FD-mri {frechet_distance(fa, fb):8.3f}  KID {kid(fa, fb)[0]:9.4f}")


if __name__ == "__main__":
    args, precision = precision_arg(sys.argv)
    if len(args) < 5:
        sys.exit(__doc__)
    main(args[1], args[2], args[3], args[4:], precision=precision)
