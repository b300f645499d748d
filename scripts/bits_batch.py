"""How fast is the test bits/code at each number of grids per `log_prob` call? Untrained,
seeded priors at a preset's size (speed does not depend on the weights) score N random grids,
BATCHES grids a call, best of ROUNDS runs each; the bits/code of each batch size is printed to
12 decimals, so that a batch that changed the value would show.

    python scripts/bits_batch.py PRESET N BATCHES [PRIORS] [ROUNDS]

Example: python scripts/bits_batch.py standard 512 16,256 pixelcnn,gated-pixelcnn,transformer
"""
import sys
import time

import torch

from bench.perf_bits import likelihood_priors, untrained_prior
from bench.presets import get_preset
from bench.sampling import bits_per_code_on
from priors import CodeSet


def main() -> None:
    if not 4 <= len(sys.argv) <= 6:
        sys.exit(__doc__.split("\n\n")[1])
    preset, n = get_preset(sys.argv[1]), int(sys.argv[2])
    batches = [int(b) for b in sys.argv[3].split(",")]
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else likelihood_priors()
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    K, side = preset.vqvae.num_codes, preset.grid
    codes = torch.randint(0, K, (n, side, side), generator=torch.Generator().manual_seed(0))
    print(f"{sys.argv[1]}: {n} random {side}x{side} grids, K = {K}, best of {rounds}, "
          f"{torch.get_num_threads()} threads")
    for name in names:
        prior = untrained_prior(name, preset, K, side, torch.device("cpu"), seed=0)
        bits_per_code_on(prior, CodeSet(codes[:2], K), 2)  # warm-up
        for batch in batches:
            best, bits = 0.0, None
            for _ in range(rounds):
                t0 = time.perf_counter()
                bits = bits_per_code_on(prior, CodeSet(codes, K), batch)
                best = max(best, n / (time.perf_counter() - t0))
            print(f"{name:15s} {batch:4d} a call: {best:8.2f} grids/s  bits/code {bits:.12f}",
                  flush=True)


if __name__ == "__main__":
    main()
