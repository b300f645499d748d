"""How loose is the nearest-SSIM search's bound on a stored run's samples, and would a bigger
basis or a pixel-distance shortlist do better? The measurement behind README's "Scoring time at
`standard`" (why the exact search, not its code, is what keeps a 128 px run's scoring over 2 min).

    python scripts/ssim_bound_gap.py OUT SPEC PRESET RUN_ID [QUERIES] [REFS] [--precision P]

For QUERIES decoded samples of run RUN_ID (stored in OUT) against the first REFS of the training
images the run's memorisation score compares them with (`scoring.make_context`'s pick), it prints
per pair, averaged over windows and pairs: SSIM; its factors' upper bounds max(cs, 0) (drops the
luminance term) and max(rho, 0) (drops luminance and contrast); the shipped bound
(`nearest.strip_bounds`, degree `BOUND_DEGREE`); and the same split bound (module doc of
`bench.metrics.nearest`) with the top r principal directions of the training patches in place of
the polynomial ones. Then, over all the run's training images, the rank of each query's
nearest-SSIM image under pixel L2 (0: L2 finds it first): whether a cheap shortlist would hold
the true nearest image.
"""
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench import metrics
from bench.metrics.image import C1, C2, gaussian_taps
from bench.metrics.nearest import strip_bounds
from bench.store import load_tensors
from bench.run import n_scored, scoring_context
from vqvae.train import decode_codes

sys.path.insert(0, str(Path(__file__).parent))
from cached_setting import CPU, cached_setting, script_args  # noqa: E402

RANKS = (5, 10, 20, 40, 80)


def window_weights() -> torch.Tensor:
    """(121,) float64 Gaussian window weights g of SSIM's 11 x 11 window."""
    g1 = gaussian_taps()
    return (g1[:, None] * g1[None]).flatten()


def patches(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 1, H, W) float64 -> window means (N, P), variances (N, P) and Gaussian-weighted
    centred patches w (N, P, 121)."""
    g = window_weights()
    p = torch.nn.functional.unfold(x, 11).transpose(1, 2)
    mu = p @ g
    w = g.sqrt() * (p - mu[..., None])
    return mu, (w * w).sum(-1), w


def split_bound(wq, vq, wr, vr, basis) -> torch.Tensor:
    """(Nq, Nr) mean over windows of a a' + e e' + sum_i max(u_i u'_i, 0) for `basis`."""
    def parts(w, v):
        t = (v + C2 / 2).sqrt()
        u = (w @ basis) / t[..., None]
        return (C2 / 2) ** 0.5 / t, (v / t**2 - (u * u).sum(-1)).clamp_min(0).sqrt(), u
    aq, eq, uq = parts(wq, vq)
    ar, er, ur = parts(wr, vr)
    return torch.stack([(aq[i] * ar + eq[i] * er + (uq[i] * ur).clamp_min(0).sum(-1)).mean(1)
                        for i in range(len(wq))])


def main() -> None:
    argv, precision = script_args(__doc__, 4, 6)
    out, spec, preset, run_id = argv[:4]
    n_q = int(argv[4]) if len(argv) > 4 else 10
    n_r = int(argv[5]) if len(argv) > 5 else 100
    cfg, sc, shared, extractor = cached_setting(out, spec, preset, precision)
    codes = load_tensors(sc.store.root / "runs" / run_id / "artefacts.safetensors")["samples/codes"]
    samples = decode_codes(shared.model, codes[:n_q], device=CPU).double()
    # the training images the run's memorisation score compares its samples with
    ctx, _ = scoring_context(cfg, shared, extractor, n_scored(cfg, shared.preset, shared.ds), sc)
    train = ctx.train
    refs = train[:n_r].double()

    mq, vq, wq = patches(samples)
    mr, vr, wr = patches(refs)
    ssim, cs_pos, rho_pos = [], [], []
    for i in range(n_q):
        cov = (wq[i][None] * wr).sum(-1)
        den = vq[i][None] + vr + C2
        cs = (2 * cov + C2) / den
        lum = (2 * mq[i] * mr + C1) / (mq[i] ** 2 + mr**2 + C1)
        ssim.append((lum * cs).mean(1))
        cs_pos.append(cs.clamp_min(0).mean(1))
        rho_pos.append(((cov + C2 / 2) / ((vq[i] + C2 / 2) * (vr + C2 / 2)).sqrt()).clamp_min(0).mean(1))
    rows = [("SSIM", torch.stack(ssim)), ("max(cs, 0)", torch.stack(cs_pos)),
            ("max(rho, 0)", torch.stack(rho_pos)),
            ("shipped bound (polynomial, 5 directions)", strip_bounds(samples.float(), refs.float()).sum(0).double())]
    sample_w = wr.reshape(-1, 121)[torch.randperm(wr.shape[0] * wr.shape[1],
                                                  generator=torch.Generator().manual_seed(0))[:200_000]]
    root_g = window_weights().sqrt()
    proj = torch.eye(121, dtype=torch.float64) - torch.outer(root_g, root_g)
    _, vecs = torch.linalg.eigh(proj @ (sample_w.T @ sample_w) @ proj)
    for r in RANKS:
        rows.append((f"split bound, top {r} principal directions",
                     split_bound(wq, vq, wr, vr, vecs.flip(1)[:, :r])))

    console = Console()
    table = Table(title=f"{run_id}: {n_q} samples x {n_r} training images, means over windows")
    for col in ("per pair", "mean", "90th pct", "max"):
        table.add_column(col, justify="left" if col == "per pair" else "right")
    for name, v in rows:
        table.add_row(name, f"{v.mean():.4f}", f"{v.flatten().quantile(0.9):.4f}", f"{v.max():.4f}")
    console.print(table)

    s = metrics.ssim_matrix(samples.float(), train)
    nearest = s.argmax(1)
    dist = torch.cdist(samples.float().flatten(1), train.flatten(1))
    rank = (dist < dist.gather(1, nearest[:, None])).sum(1)
    console.print(f"nearest-SSIM training image's rank under pixel L2 among {len(train)}: "
                  f"median {int(rank.median())}, max {int(rank.max())} "
                  f"(nearest SSIM mean {float(s.max(1).values.mean()):.4f})")


if __name__ == "__main__":
    main()
