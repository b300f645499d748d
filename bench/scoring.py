"""Scoring a set of decoded samples the same way for every prior and for the reference row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench import metrics
from bench.extractors import FeatureExtractor
from bench.store import Artefact, Store, read_json, write_json_atomic
from vqvae.io import tensors_hash
from vqvae import VQVAE, decode_codes
from vqvae.train import to_float


@dataclass(frozen=True)
class SampleSet:
    images: Tensor  # (N, 1, H, W) float in [0, 1]
    codes: Tensor  # (N, h, w) int64
    labels: Tensor | None = None  # (N,) int64 class of each sample, or None


@dataclass(frozen=True)
class ScoringContext:
    """The real data every sample set is compared against, computed once per run."""

    real: Tensor  # (n, 1, H, W) what samples are compared against: the backbone's decodings of
    # n test images' codes (REAL_SIDE), or the images themselves when no backbone is given
    real_labels: Tensor | None  # (n,) or None
    real_feats: np.ndarray  # (n, F) extractor features of `real`
    train: Tensor | None  # (M, 1, H, W) training images, for memorisation; None: not scored
    train_index: np.ndarray  # (M,) their indices in the train split (the data-ceiling row's pool)
    test_code_counts: Tensor  # (K,) code histogram over the whole test split
    memorised_above: float  # nearest-train SSIM threshold of memorisation (from `real`); nan: none
    num_codes: int
    extractor: FeatureExtractor
    label_names: tuple[str, ...] = ()


# what every run key's scores are compared against (key field, and the tables' titles): n test
# images of one half of the test subjects, decoded from their codes; the reference row comes from
# the other half (`subject_halves`)
REAL_SIDE = "decoded test codes of half the test subjects"


def subject_halves(subjects: np.ndarray, labels: np.ndarray | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test image indices of two halves of the test subjects, no subject in both: samples are
    compared against images of the first, the reference row's reconstructions come from the
    second. A reference that shared subjects with the real side would score as if a prior had
    reproduced those very subjects (on mni, 50 test subjects: FD-mri 0.14 against 0.31 from
    other subjects), while priors, like the data-ceiling row, only ever meet new ones.

    Subjects are dealt in a seeded order, class by class (a subject's first label), each to the
    half with fewer images of its class so far (a tie: fewer images in all), so that both halves
    hold every class alike and about as many images. A split with fewer than two subjects is
    halved by image."""
    subjects = np.asarray(subjects).astype(str)
    names, first, inverse = np.unique(subjects, return_index=True, return_inverse=True)
    if len(names) < 2:
        names, first, inverse = np.arange(len(subjects)), np.arange(len(subjects)), \
            np.arange(len(subjects))
    counts = np.bincount(inverse, minlength=len(names))
    strata = np.zeros(len(names), np.int64) if labels is None else np.asarray(labels)[first]
    rng = np.random.default_rng(seed)
    half = np.zeros(len(names), np.int64)
    totals = [0, 0]
    for stratum in np.unique(strata):
        sizes = [0, 0]
        for s in rng.permutation(np.flatnonzero(strata == stratum)):
            # the half with fewer images of this class; on a tie, fewer images in all
            side = int(sizes[1] < sizes[0]) if sizes[0] != sizes[1] else int(totals[1] < totals[0])
            half[s] = side
            sizes[side] += counts[s]
            totals[side] += counts[s]
    mine = half[inverse]
    return np.flatnonzero(mine == 0), np.flatnonzero(mine == 1)


def make_context(test_images: np.ndarray, test_labels: np.ndarray | None,
                 train_images: np.ndarray | None,
                 test_codes: Tensor, num_codes: int, extractor: FeatureExtractor,
                 label_names: tuple[str, ...], *, n: int, seed: int, subjects: np.ndarray,
                 strata: np.ndarray | None = None,
                 backbone: VQVAE | None = None, max_train: int = 4000,
                 store: Store | None = None, force: bool = False,
                 device: torch.device = torch.device("cpu")) -> tuple[ScoringContext, np.ndarray]:
    """Pick n real test images of one half of the test subjects (seeded; `subjects` and the
    class `strata` per test image, see `subject_halves`); return the context and n test indices
    of the other half, from which the reference row's reconstructions come.

    With `backbone`, the side samples are compared against (FD, KID, precision, recall,
    NN-SSIM) is its decoding of those test images' codes, not the images: samples are
    decodings too, so the decoder's own blur and shift cancel and the scores measure the prior
    (at 128 px the `mri` features put every decoded image, uniform noise included, ~28 FD units
    from every real one). Memorisation still compares samples with real training images.
    `store`: where the memorisation threshold (every real image's nearest train image) is
    kept, keyed by the images' bytes. `train_images` None: no memorisation score (samples
    re-scored against another dataset than the one they were trained on)."""
    half_a, half_b = subject_halves(subjects, strata, seed)
    if min(len(half_a), len(half_b)) < n:
        raise ValueError(f"{n} images asked of each half of the test subjects, which hold "
                         f"{len(half_a)} and {len(half_b)}")
    rng = np.random.default_rng(seed)
    chosen, rest = np.sort(rng.choice(half_a, n, replace=False)), \
        np.sort(rng.choice(half_b, n, replace=False))
    images = to_float(np.asarray(test_images[chosen]), device)  # image metrics run on `device`
    if train_images is None:
        train, train_pick, threshold = None, np.zeros(0, np.int64), math.nan
    else:
        order_train = np.random.default_rng(seed + 1).permutation(len(train_images))
        train_pick = np.sort(order_train[:max_train])
        train = to_float(np.asarray(train_images[train_pick]), device)
        threshold = stored_memorisation_threshold(train, images, store, force)
    real = images if backbone is None else decode_codes(
        backbone, test_codes[torch.from_numpy(chosen)], device=device).to(device)
    ctx = ScoringContext(
        real=real,
        real_labels=None if test_labels is None else torch.from_numpy(np.asarray(test_labels)[chosen]),
        real_feats=extractor.features(real),
        train=train, train_index=train_pick,
        memorised_above=threshold,
        test_code_counts=metrics.code_histogram(test_codes, num_codes),
        num_codes=num_codes, extractor=extractor, label_names=label_names)
    return ctx, rest


MEMORISED_QUANTILE = 0.95  # of held-out images' nearest-train SSIM: the memorisation line


def stored_memorisation_threshold(train: Tensor, real: Tensor, store: Store | None,
                                  force: bool = False) -> float:
    """`metrics.memorisation_threshold`, kept in `store` (kind `scores`) when one is given."""
    if store is None:
        return metrics.memorisation_threshold(train, real, quantile=MEMORISED_QUANTILE)
    meta = {"metric": "memorisation_threshold", "quantile": MEMORISED_QUANTILE,
            "ssim": "float64"}  # before: float32 all-pairs SSIM (values off by ~1e-7)
    art = Artefact.of("scores", meta | {"images": tensors_hash({"train": train, "real": real}, {})},
                      prefix="memorisation-")

    def build(directory: Path) -> None:
        threshold = metrics.memorisation_threshold(train, real, quantile=MEMORISED_QUANTILE)
        write_json_atomic(directory / "threshold.json",
                   meta | {"threshold": threshold, "n_train": len(train), "n_real": len(real)})

    threshold, _ = store.get_or_build(
        art, build, lambda d: float(read_json(d / "threshold.json")["threshold"]), force=force)
    return threshold


def _image_scores(images: Tensor, feats: np.ndarray, real: Tensor, real_feats: np.ndarray,
                  seed: int, *, manifold: bool = True) -> dict[str, float]:
    """Feature-distribution and realism scores; `manifold` adds k-NN precision / recall."""
    # subsets of half the smaller set, so that the subsets differ and kid_std means something
    subset = max(2, min(1000, len(feats) // 2, len(real_feats) // 2))
    kid_mean, kid_std = metrics.kid(real_feats, feats, seed=seed, subset_size=subset)
    out = {"fd": metrics.frechet_distance(real_feats, feats), "kid": kid_mean, "kid_std": kid_std,
           "nn_ssim": float(metrics.nn_ssim(images, real).mean())}
    if manifold:
        out["precision"], out["recall"] = metrics.precision_recall(real_feats, feats)
    return out


MIN_PER_CLASS = 8  # images of a class on each side before per-class scores are computed


def score_samples(samples: SampleSet, ctx: ScoringContext, *, seed: int) -> dict[str, float]:
    """Every sample metric for one set of decoded samples, plus per-class scores if labelled."""
    images = samples.images.to(ctx.real.device)
    feats = ctx.extractor.features(images)
    scores = _image_scores(images, feats, ctx.real, ctx.real_feats, seed)
    gen = torch.Generator().manual_seed(seed)
    counts = metrics.code_histogram(samples.codes, ctx.num_codes)
    if ctx.train is not None:
        scores["memorisation"] = metrics.memorised_share(images, ctx.train, ctx.memorised_above)
    scores |= {
        "diversity_ssim": metrics.diversity(images, max_pairs=2000, generator=gen),
        **metrics.code_usage(counts, ctx.test_code_counts),
        "n_samples": float(samples.images.shape[0]),
    }
    if samples.labels is not None and ctx.real_labels is not None:
        for c, name in enumerate(ctx.label_names):
            mine, theirs = samples.labels == c, ctx.real_labels == c
            if min(int(mine.sum()), int(theirs.sum())) < MIN_PER_CLASS:
                continue  # too few images for a per-class score; the pooled scores stand
            per_class = _image_scores(images[mine.to(images.device)], feats[mine.numpy()],
                                      ctx.real[theirs.to(images.device)],
                                      ctx.real_feats[theirs.numpy()], seed, manifold=False)
            scores |= {f"{k}[{name}]": v for k, v in per_class.items() if k != "kid_std"}
    return scores


def score_codes(model: VQVAE, codes: Tensor, labels: Tensor | None, ctx: ScoringContext, *,
                seed: int, device: torch.device,
                originals: Tensor | None = None) -> dict[str, float]:
    """`score_samples` of code grids (N, h, w) decoded by `model`; with `originals` (the images
    the codes were encoded from), their recon SSIM and PSNR too: a reference row's scores."""
    images = decode_codes(model, codes, device=device).to(device)
    scores = score_samples(SampleSet(images, codes, labels), ctx, seed=seed)
    if originals is not None:
        scores["recon_ssim"] = float(metrics.ssim(images, originals).mean())
        scores["recon_psnr"] = float(metrics.psnr(images, originals).mean())
    return scores
