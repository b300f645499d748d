"""Drawing a run's samples and scoring its likelihood: what `bench run`, `bench score` and
`bench perf` share. Samples come in batches of SAMPLE_BATCH grids, each from its own seeded
generator, so the grids do not depend on how the batches are spread over torchrun's ranks."""

from __future__ import annotations

import torch

from bench import metrics
from bench.torchrun import Ranks
from bench.validate import check_log_prob, check_samples
from priors import CodeSet, Prior
from vqvae import CodeExport


def code_set(export: CodeExport, split: str, conditional: bool) -> CodeSet:
    labels = export.labels.get(split) if conditional else None
    return CodeSet(codes=export.codes[split], num_codes=export.num_codes, labels=labels)


def sample_labels(n: int, export: CodeExport, conditional: bool) -> torch.Tensor | None:
    """Balanced class labels for conditional sampling, None otherwise."""
    if not conditional:
        return None
    return torch.arange(n) % len(export.label_names)


SAMPLE_BATCH = 256  # grids sampled at once by `bench run` (`bench perf` times this batch too)


def chunk_seed(seed: int, chunk: int) -> int:
    """The generator seed of the `chunk`-th batch of samples: `seed` for the first, then
    `seed` + chunk * 2**32 (distinct for every seed < 2**32)."""
    return seed + (chunk << 32)


def sample_prior(prior: Prior, n: int, *, seed: int, labels: torch.Tensor | None,
                 batch: int = SAMPLE_BATCH, ranks: Ranks = Ranks()) -> torch.Tensor | None:
    """n grids, sampled `batch` at a time, each batch from its own generator (`chunk_seed`).
    Under torchrun the batches are dealt round-robin to the ranks and gathered on rank 0:
    the same grids for any number of ranks. Returns (n, h, w) on rank 0, None on the others."""
    mine = {}
    for chunk, i in list(enumerate(range(0, n, batch)))[ranks.rank::ranks.world]:
        gen = torch.Generator(device=prior.device).manual_seed(chunk_seed(seed, chunk))
        lab = None if labels is None else labels[i:i + batch].to(prior.device)
        m = min(batch, n - i)
        mine[i] = check_samples(prior, prior.sample(m, generator=gen, labels=lab), m).cpu()
    parts = ranks.gather(mine)
    if parts is None:
        return None
    chunks = {i: codes for part in parts for i, codes in part.items()}
    return torch.cat([chunks[i] for i in sorted(chunks)])


def bits_per_code_on(prior: Prior, test: CodeSet, batch: int = 256) -> float | None:
    """Mean test bits per code of a prior with a likelihood; None for one without."""
    if not prior.has_likelihood:
        return None
    lp = []
    with torch.no_grad():
        for i in range(0, len(test), batch):
            lab = None if test.labels is None else test.labels[i:i + batch].to(prior.device)
            codes = test.codes[i:i + batch].to(prior.device)
            lp.append(check_log_prob(prior, prior.log_prob(codes, lab), len(codes)).cpu())
    return metrics.bits_per_code(torch.cat(lp), test.grid)
