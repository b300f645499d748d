"""Scoring glue: per-class scores appear for labelled samples, and small classes are skipped."""

import numpy as np
import torch

from bench.scoring import MIN_PER_CLASS, SampleSet, make_context, score_samples, subject_halves


class PixelFeatures:
    name, id, dim = "pixels", "pixels-test", 16

    def features(self, x, *, batch=256):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1).double().numpy()


def images(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    r = rng.uniform(3, 7, (n, 1, 1))
    return (200 * ((xx - 8) ** 2 + (yy - 8) ** 2 < r ** 2) + rng.integers(0, 40, (n, 16, 16))).astype(np.uint8)


def context(n_real, labels):
    test = images(2 * n_real, 0)
    return make_context(test, labels, images(40, 1), torch.zeros(4, 4, 4, dtype=torch.long), 8,
                        PixelFeatures(), ("AD", "NC"), n=n_real, seed=0,
                        subjects=np.arange(2 * n_real), strata=labels)


def samples(n, labels):
    x = torch.from_numpy(images(n, 2)).unsqueeze(1).float() / 255
    codes = torch.randint(0, 8, (n, 4, 4), generator=torch.Generator().manual_seed(3))
    return SampleSet(x, codes, labels)


def test_per_class_scores_for_labelled_samples():
    ctx, rest = context(32, np.arange(64) % 2)
    assert len(set(rest.tolist())) == 32
    scores = score_samples(samples(32, torch.arange(32) % 2), ctx, seed=0)
    for key in ("fd", "kid", "nn_ssim", "precision", "recall", "memorisation"):
        assert np.isfinite(scores[key]), key
    for name in ("AD", "NC"):
        assert np.isfinite(scores[f"fd[{name}]"]) and np.isfinite(scores[f"nn_ssim[{name}]"])


def test_classes_too_small_for_per_class_scores_are_skipped():
    ctx, _ = context(32, np.arange(64) % 2)
    labels = torch.zeros(32, dtype=torch.long)
    labels[: MIN_PER_CLASS - 1] = 1  # NC has fewer than MIN_PER_CLASS samples
    scores = score_samples(samples(32, labels), ctx, seed=0)
    assert "fd[AD]" in scores and "fd[NC]" not in scores


def test_a_context_without_training_images_scores_everything_but_memorisation():
    test = images(64, 0)
    with_train, _ = context(32, None)
    without, rest = make_context(test, None, None, torch.zeros(4, 4, 4, dtype=torch.long), 8,
                                 PixelFeatures(), (), n=32, seed=0, subjects=np.arange(64))
    assert without.train is None and len(rest) == 32
    full = score_samples(samples(32, None), with_train, seed=0)
    scores = score_samples(samples(32, None), without, seed=0)
    assert "memorisation" not in scores
    assert scores == {k: v for k, v in full.items() if k != "memorisation"}


def test_memorisation_threshold_is_cached_by_image_content(tmp_path, monkeypatch):
    from bench import metrics, scoring
    train, real = (torch.from_numpy(images(n, s)).unsqueeze(1).float() / 255 for n, s in ((20, 1), (8, 0)))
    from bench.store import Store
    store = Store(tmp_path)
    first = scoring.stored_memorisation_threshold(train, real, store)
    assert first == metrics.memorisation_threshold(train, real, quantile=scoring.MEMORISED_QUANTILE)
    calls = []
    real_fn = metrics.memorisation_threshold
    monkeypatch.setattr(metrics, "memorisation_threshold",
                        lambda *a, **k: calls.append(1) or real_fn(*a, **k))
    assert scoring.stored_memorisation_threshold(train, real, store) == first and not calls
    other = real.clone()
    other[0, 0, 0, 0] += 0.5  # one pixel of one image: a different key, computed afresh
    scoring.stored_memorisation_threshold(train, other, store)
    assert calls == [1] and len(list(tmp_path.glob("scores/memorisation-*/threshold.json"))) == 2
    scoring.stored_memorisation_threshold(train, other, store, force=True)
    assert calls == [1, 1]  # --force recomputes it


def test_with_a_backbone_samples_are_compared_with_its_decodings_of_the_test_codes():
    """The real side is the decoded codes of the chosen test images (so the decoder's blur
    cancels); memorisation's threshold still comes from the images themselves."""
    from vqvae import VQVAE, VQVAEConfig, decode_codes
    model = VQVAE(VQVAEConfig(hidden=8, res_blocks=1, res_hidden=4, num_codes=8, code_dim=4))
    model.reset_parameters(0)
    test = images(64, 0)
    codes = torch.randint(0, 8, (64, 4, 4), generator=torch.Generator().manual_seed(5))
    subjects = np.arange(64) // 2  # two images a subject
    raw, rest = make_context(test, None, images(40, 1), codes, 8, PixelFeatures(), (), n=16, seed=0,
                             subjects=subjects)
    dec, rest2 = make_context(test, None, images(40, 1), codes, 8, PixelFeatures(), (), n=16,
                              seed=0, subjects=subjects, backbone=model)
    half, _ = subject_halves(subjects, None, 0)
    chosen = np.sort(np.random.default_rng(0).choice(half, 16, replace=False))
    assert np.array_equal(rest, rest2)
    assert torch.equal(raw.real, torch.from_numpy(test[chosen]).unsqueeze(1).float() / 255)
    assert torch.allclose(dec.real, decode_codes(model, codes[torch.from_numpy(chosen)],
                                                 device=torch.device("cpu")))
    assert np.allclose(dec.real_feats, PixelFeatures().features(dec.real))
    assert dec.memorised_above == raw.memorised_above
    # the decoded test codes themselves score as a perfect sample set: FD 0, NN-SSIM 1
    same = score_samples(SampleSet(dec.real, codes[torch.from_numpy(chosen)], None), dec, seed=0)
    assert abs(same["fd"]) < 1e-6 and same["nn_ssim"] > 0.999


def test_train_and_test_differ_only_when_the_gap_is_large_and_beyond_sampling_noise():
    from bench.run import splits_differ
    ref = {"fd": 0.009, "kid": -0.0001, "kid_std": 0.0003}
    assert not splits_differ(ref, {"fd": 0.020, "kid": 0.0001, "kid_std": 0.0003})  # 2.2x, noise
    assert splits_differ(ref, {"fd": 0.5, "kid": 0.01, "kid_std": 0.0005})
    assert not splits_differ(ref, {"fd": 0.015, "kid": 0.01, "kid_std": 0.0005})  # under 2x
    assert splits_differ({"fd": 0.2}, {"fd": 5.8})  # records without KID: the ratio alone


def test_subject_halves_share_no_subject_and_hold_every_class_alike():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 12, 60)  # subjects of 1 to 11 images
    subjects = np.repeat([f"s{i:02d}" for i in range(60)], counts)
    labels = np.repeat(np.arange(60) % 3 == 0, counts).astype(np.int64)  # 20 AD, 40 NC subjects
    a, b = subject_halves(subjects, labels, seed=0)
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(len(subjects)))
    assert not set(subjects[a]) & set(subjects[b])
    assert abs(len(a) - len(b)) <= counts.max()
    for c in (0, 1):
        assert abs(int((labels[a] == c).sum()) - int((labels[b] == c).sum())) <= counts.max()
    again = subject_halves(subjects, labels, seed=0)
    assert np.array_equal(again[0], a) and not np.array_equal(subject_halves(subjects, labels, 1)[0], a)


def test_one_subject_is_halved_by_image():
    a, b = subject_halves(np.array(["only"] * 9), None, seed=0)
    assert len(a) + len(b) == 9 and abs(len(a) - len(b)) == 1


def test_the_reference_rows_images_come_from_other_subjects_than_the_real_side():
    test = images(80, 0)
    subjects = np.repeat(np.arange(8), 10)  # 8 subjects of 10 slices: 4 a half
    ctx, rest = make_context(test, None, None, torch.zeros(80, 4, 4, dtype=torch.long), 8,
                             PixelFeatures(), (), n=30, seed=0, subjects=subjects)
    real = {i for i in range(80)
            if any(torch.equal(torch.from_numpy(test[i]).float() / 255, r[0]) for r in ctx.real)}
    assert len(real) == 30 and len(rest) == 30
    assert not set(subjects[sorted(real)]) & set(subjects[rest])
