"""Drawing a run's samples and scoring its likelihood: what `bench run`, `bench score` and
`bench perf` share. Samples come in batches of SAMPLE_BATCH grids, each from its own seeded
generator, so the grids do not depend on how the batches are spread over torchrun's ranks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench import metrics
from bench.torchrun import Ranks
from bench.validate import check_log_prob, check_samples
from priors import CodeSet, Prior
from trainkit import Checkpoint, NullCheckpoint, NullProgress, Progress, Stopwatch
from vqvae import CodeExport
from vqvae.io import tensors_hash


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


# Grids per `log_prob` call of the test bits/code, by device type (others: DEFAULT_BITS_BATCH).
# On a CPU a small batch keeps a net's activations in cache: at `standard` (32x32 grids, 2
# cores, Zen 3) 16 grids a call scored 1.2-2.2x the grids/s of 256 for every likelihood prior, to
# the same bits (README, "What the test bits/code costs"); a GPU wants large batches.
BITS_BATCH = {"cpu": 16}
DEFAULT_BITS_BATCH = 256


def bits_batch(device: torch.device) -> int:
    return BITS_BATCH.get(device.type, DEFAULT_BITS_BATCH)


def bits_per_code_on(prior: Prior, test: CodeSet, batch: int | None = None) -> float | None:
    """Mean test bits per code of a prior with a likelihood; None for one without."""
    return measure_bits(prior, test, batch).bits


@dataclass(frozen=True)
class Bits:
    bits: float | None  # mean test bits per code; None for a prior without a likelihood
    wall_s: float  # seconds it took, through resumes
    resumed: int  # grids whose log-likelihood a saved state held (0: from the start)


def measure_bits(prior: Prior, test: CodeSet, batch: int | None = None, *,
                 checkpoint: Checkpoint | None = None, progress: Progress | None = None) -> Bits:
    """`bits_per_code_on`, resumable. The per-grid log-likelihoods of the batches done are
    saved in `checkpoint` when it is due, keyed by the prior's weights, the test grids, `batch`,
    the device type and the torch version (not the code version: as a fit's training
    checkpoint), so an evaluation killed part way goes on from the batches it finished, to the
    same value (maskgit replays its decoding order: at `standard`, 10 forwards of its network
    over each of ADNI's 8,000 test grids). A state saved for anything else is ignored.
    `batch`: grids per `log_prob` call; None: `bits_batch` of the prior's device."""
    if not prior.has_likelihood:
        return Bits(None, 0.0, 0)
    batch = batch or bits_batch(prior.device)  # grids per log_prob call
    checkpoint, progress = checkpoint or NullCheckpoint(), progress or NullProgress()
    key = tensors_hash({f"weights/{k}": v for k, v in prior.state_dict().items()}
                       | {"test/codes": test.codes}
                       | ({} if test.labels is None else {"test/labels": test.labels}),
                       {"batch": batch, "device": prior.device.type, "torch": torch.__version__})
    state = checkpoint.load()
    if state is None or state.get("key") != key:
        state = {"log_prob": torch.zeros(0, dtype=torch.float64), "wall_s": 0.0}
    lp, start = [state["log_prob"]], len(state["log_prob"])
    clock = Stopwatch(state["wall_s"], None)
    progress.start("bits/code on the test split"
                   + (f" (resumed at {start} of {len(test)} grids)" if start else ""), len(test))
    progress.advance(start)
    with torch.no_grad():  # step: batches done, counted from the first grid
        for step, i in enumerate(range(start, len(test), batch), start=start // batch + 1):
            lab = None if test.labels is None else test.labels[i:i + batch].to(prior.device)
            codes = test.codes[i:i + batch].to(prior.device)
            lp.append(check_log_prob(prior, prior.log_prob(codes, lab), len(codes)).cpu().double())
            progress.advance(len(codes))
            if i + batch < len(test) and checkpoint.due(step):
                checkpoint.save({"key": key, "step": step, "log_prob": torch.cat(lp),
                                 "wall_s": clock.wall_s()})
    progress.stop()
    return Bits(metrics.bits_per_code(torch.cat(lp), test.grid), clock.wall_s(), start)
