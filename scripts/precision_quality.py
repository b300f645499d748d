"""One prior trained in fp32 and under bf16 autocast for the same steps on a stored setting's
code export (seed 0 both), and the test bits/code of each: the rule that lets bf16 be a CPU
default is a difference within 0.01 bits/code (the backbone's: recon SSIM within 0.005).
Nothing is written to the store.

    python scripts/precision_quality.py OUT SPEC PRESET PRIOR STEPS [TEST_GRIDS] [--precision P]

TEST_GRIDS: score the first that many test grids (default: all); both precisions see the same.
--precision P: the setting's backbone was trained at P (`bench run --precision P`; default:
the preset's own).
"""
import dataclasses
import sys
from pathlib import Path

import priors
from bench.sampling import bits_per_code_on, code_set
from priors import CodeSet

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import cached_setting, fit_config, script_args  # noqa: E402


def main() -> None:
    argv, backbone_precision = script_args(__doc__, 5, 6)
    out, spec, preset_name, prior_name, steps = argv[:5]
    cfg, sc, shared, _ = cached_setting(out, spec, preset_name, backbone_precision)
    cls, export = priors.get_prior(prior_name), shared.export
    test = code_set(export, "test", False)
    if len(argv) == 6:
        test = CodeSet(test.codes[:int(argv[5])], test.num_codes)
    bits = {}
    for precision in ("fp32", "bf16"):
        config = dataclasses.replace(shared.preset.prior_config(cls), precision=precision,
                                     max_steps=int(steps))
        prior, summary, fit_s = fit_config(cls, config, export, sc.progress)
        bits[precision] = bits_per_code_on(prior, test)
        print(f"{prior_name} {precision}: {summary['steps']:.0f} steps in {fit_s:.0f} s "
              f"({summary['steps'] / fit_s:.3f} steps/s, bf16 autocast "
              f"{summary['bf16_autocast']:.0f}), test bits/code {bits[precision]:.4f} on "
              f"{len(test)} grids", flush=True)
    diff = bits["bf16"] - bits["fp32"]
    print(f"bf16 - fp32: {diff:+.4f} bits/code ({'within' if abs(diff) <= 0.01 else 'outside'} "
          f"the 0.01 rule)")


if __name__ == "__main__":
    main()
