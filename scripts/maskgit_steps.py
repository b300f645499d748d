"""How much of a fitted MaskGIT's bits/code is the price of parallel decoding? Its likelihood
is that of its sampler: a fixed order cut into T groups, the positions of a group drawn
independently given the earlier groups. The same network (trained on every mask ratio) is
evaluated here on N seeded test grids with the order cut into more groups (same permutation);
as T grows the within-group independence shrinks, and at T = L the order is autoregressive. For
the fit's own T the per-group bits/code is also printed. From cached artefacts only.

    python scripts/maskgit_steps.py OUT SPEC PRESET N T1,T2,... [SEED] [--precision P]

Example: python scripts/maskgit_steps.py results-std adni:../shared/data/adni/AD_NC standard 128 10,20,40
"""
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench.run import build_prior, stage_fit
from priors.maskgit import decoding_groups

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import CPU, cached_setting, script_args  # noqa: E402


@torch.no_grad()
def group_nats(prior, codes: torch.Tensor, groups: list[torch.Tensor]) -> np.ndarray:
    """(G,) summed -log p of the codes in each group, over all grids, replaying the order."""
    prior.net.eval()
    flat = codes.flatten(1)
    out = np.zeros(len(groups))
    for s in range(0, flat.shape[0], 64):
        chunk = flat[s:s + 64]
        tokens = torch.full_like(chunk, prior.net.mask_id)
        for i, group in enumerate(groups):
            logp = prior.net(tokens)[:, group].float().log_softmax(-1)
            out[i] -= logp.gather(-1, chunk[:, group, None]).double().sum().item()
            tokens[:, group] = chunk[:, group]
    return out


def main() -> None:
    argv, precision = script_args(__doc__, 5, 6)
    out, spec, preset_name, n, steps = argv[:5]
    base, sc, shared, _ = cached_setting(out, spec, preset_name, precision)
    cfg = dataclasses.replace(base, prior="maskgit", seed=int(argv[5]) if len(argv) == 6 else 0)
    prior = build_prior(cfg, shared.preset, shared.export, CPU)
    stage_fit(cfg, shared.preset, prior, shared.export, sc)  # found: the store is read-only
    test = torch.as_tensor(shared.export.codes["test"])
    idx = np.sort(np.random.default_rng(0).choice(len(test), int(n), replace=False))
    codes = test[idx].long()
    length = codes[0].numel()
    own = prior.config.steps
    console = Console(width=160)
    table = Table(title=f"maskgit seed {cfg.seed} ({spec}, preset {preset_name}): bits/code of "
                        f"{len(idx)} test grids by decoding steps T (the fit's T = {own})")
    for col in ("T", "groups", "largest group", "bits/code", "s"):
        table.add_column(col, justify="right")
    per_group = None
    for t in sorted({int(s) for s in steps.split(",")}):
        groups = decoding_groups(prior.grid, t, prior.config.order_seed)
        t0 = time.perf_counter()
        nats = group_nats(prior, codes, groups)
        bits = nats.sum() / math.log(2) / (len(idx) * length)
        table.add_row(str(t), str(len(groups)), str(max(len(g) for g in groups)), f"{bits:.4f}",
                      f"{time.perf_counter() - t0:.0f}")
        if t == own:
            per_group = (groups, nats)
    console.print(table)
    if per_group is not None:
        groups, nats = per_group
        g = Table(title=f"T = {own}: bits/code of each group (positions filled at that step)")
        for col in ("step", "positions", "filled before", "bits/code"):
            g.add_column(col, justify="right")
        before = 0
        for i, (group, nat) in enumerate(zip(groups, nats), 1):
            g.add_row(str(i), str(len(group)), str(before),
                      f"{nat / math.log(2) / (len(idx) * len(group)):.3f}")
            before += len(group)
        console.print(g)


if __name__ == "__main__":
    main()
