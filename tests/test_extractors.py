"""Feature extractors: the mri encoder (tiny preset, seconds) and the inception error paths."""

import numpy as np
import pytest
import torch

from bench.errors import ArtefactError, BenchError
from bench.extractors import EXTRACTORS, augment, build_extractor, inception, mri
from bench.metrics import frechet_distance
from tests.test_metrics_image import brain_phantoms

CPU = torch.device("cpu")


def _train_images(n: int = 64, size: int = 32, seed: int = 0) -> np.ndarray:
    return (brain_phantoms(n, size=size, seed=seed)[:, 0] * 255).round().to(torch.uint8).numpy()


def _build(cache_dir, images=None, seed=0, **kw):
    images = _train_images() if images is None else images
    return build_extractor("mri", train_images=images, cache_dir=cache_dir, device=CPU, seed=seed,
                           preset="tiny", **kw)


def test_mri_tiny_is_deterministic_and_cached(tmp_path, monkeypatch):
    first, second = _build(tmp_path / "a"), _build(tmp_path / "b")
    assert first.name == "mri" and first.id == second.id
    assert _build(tmp_path / "c", seed=1).id != first.id

    def no_training(*args, **kwargs):
        raise AssertionError("cache miss: the encoder was trained again")

    monkeypatch.setattr(mri, "train_encoder", no_training)
    again = _build(tmp_path / "a")
    assert again.id == first.id
    x = brain_phantoms(5, size=32, seed=3)
    np.testing.assert_array_equal(again.features(x), first.features(x))


def test_mri_reports_progress(tmp_path):
    calls = []

    class Recorder:
        def start(self, description, total): calls.append(("start", total))
        def advance(self, n=1, **metrics): calls.append(("advance", sorted(metrics)))
        def stop(self): calls.append(("stop",))

    _build(tmp_path, progress=Recorder())
    assert calls[0] == ("start", mri.preset_config("tiny").steps)
    assert ("advance", ["loss"]) in calls and calls[-1] == ("stop",)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_mri_features_shape_and_finite_at_any_resolution(tmp_path, size):
    ex = _build(tmp_path)
    feats = ex.features(brain_phantoms(7, size=size, seed=4), batch=3)
    assert feats.shape == (7, ex.dim) and feats.dtype == np.float64
    assert np.isfinite(feats).all()


def test_mri_features_separate_real_from_scrambled_images(tmp_path):
    ex = _build(tmp_path, images=_train_images(96))
    x = brain_phantoms(160, size=32, seed=5)
    g = torch.Generator().manual_seed(0)
    shuffled = x.flatten(1)[:, torch.randperm(32 * 32, generator=g)].view_as(x)
    real = ex.features(x[:80])
    halves = frechet_distance(real, ex.features(x[80:]))
    assert halves * 10 < frechet_distance(real, ex.features(shuffled[80:]))
    assert halves * 10 < frechet_distance(real, ex.features(torch.rand(x[80:].shape, generator=g)))


def test_mri_corrupt_cache_is_an_artefact_error(tmp_path):
    ex = _build(tmp_path)
    (folder,) = (tmp_path / "extractors").iterdir()
    weights = folder / "encoder.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtefactError, match="encoder.safetensors fails its sha256 check.*--force"):
        _build(tmp_path)
    weights.write_bytes(good[:-8] + bytes(8))  # same size, other bytes
    with pytest.raises(ArtefactError, match="fails its sha256 check"):
        _build(tmp_path)
    weights.write_bytes(good)
    assert _build(tmp_path).id == ex.id
    (folder / "extractor.json").write_text("{not json")
    with pytest.raises(ArtefactError, match="extractor.json fails its sha256 check"):
        _build(tmp_path)
    assert _build(tmp_path, force=True).id == ex.id  # --force retrains, to the same weights


def test_build_extractor_rejects_bad_arguments(tmp_path):
    with pytest.raises(BenchError, match="unknown extractor 'clip'; available: mri, inception"):
        build_extractor("clip", train_images=_train_images(), cache_dir=tmp_path, device=CPU, seed=0)
    assert EXTRACTORS == ("mri", "inception")
    with pytest.raises(BenchError, match="unknown extractor preset 'huge'; available: tiny, quick, standard, full"):
        build_extractor("mri", train_images=_train_images(), cache_dir=tmp_path, device=CPU, seed=0, preset="huge")
    with pytest.raises(BenchError, match=r"\(N>=2, H, W\) uint8"):
        _build(tmp_path, images=_train_images().astype(np.float32))
    with pytest.raises(BenchError, match="at least 16x16"):
        _build(tmp_path, images=_train_images()[:, :8, :8])


def test_mri_features_reject_bad_input(tmp_path):
    ex = _build(tmp_path)
    x = brain_phantoms(2, size=32)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        ex.features(x[:, 0])
    with pytest.raises(ValueError, match="float tensor"):
        ex.features((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        ex.features(x * 2)
    with pytest.raises(ValueError, match="at least 16x16"):
        ex.features(x[..., :8, :8])
    with pytest.raises(ValueError, match="batch must be >= 1"):
        ex.features(x, batch=0)


@pytest.mark.parametrize("field, value, match", [("width", 0, "width must be >= 1"),
                                                 ("batch_size", 1, "batch_size must be >= 2"),
                                                 ("temperature", 0.0, "must be > 0")])
def test_mri_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        mri.MriConfig(**{field: value})


def test_inception_without_torch_fidelity_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch_fidelity", None)  # import fails like here
    with pytest.raises(BenchError, match=r"pip install 'vq-prior-bench\[inception\]'.*--fid-weights PATH.*"
                                         r"--extractor mri \(import failed"):
        build_extractor("inception", train_images=_train_images(), cache_dir=tmp_path, device=CPU, seed=0)


def test_inception_weights_are_found_or_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BenchError, match="no Inception weights in .*checkpoints; inception extractor needs"):
        inception.resolve_weights(None)
    with pytest.raises(BenchError, match="--fid-weights .*missing.pth is not a file"):
        inception.resolve_weights(tmp_path / "missing.pth")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / inception.WEIGHT_FILES[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a state dict")
    assert inception.resolve_weights(None) == cached
    monkeypatch.setattr(inception, "_import_inception", lambda: None)
    with pytest.raises(ArtefactError, match="not a loadable state dict"):
        inception.build_inception(device=CPU, weights_path=cached)


def test_inception_feeds_uint8_rgb_to_torch_fidelity():
    seen = []

    class FakeFidelity(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return (x.float().mean((2, 3)).repeat(1, 683)[:, :2048],)

    ex = inception.InceptionExtractor(FakeFidelity(), "0" * 64, CPU)
    x = brain_phantoms(5, size=32)
    feats = ex.features(x, batch=2)
    assert feats.shape == (5, 2048) and feats.dtype == np.float64 and ex.id == "inception-" + "0" * 16
    assert all(b.dtype == torch.uint8 and b.shape[1] == 3 for b in seen)
    assert torch.equal(torch.cat(seen)[:, 0], (x[:, 0] * 255).round().to(torch.uint8))


def test_augmentations_are_seeded_bounded_and_varied():
    x = brain_phantoms(6, size=32, seed=6)
    views = [augment.two_views(x, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert views[0].shape == (12, 1, 32, 32) and torch.equal(views[0], views[1])
    assert views[0].min() >= 0 and views[0].max() <= 1
    assert (views[0][:6] - views[0][6:]).abs().mean() > 0.01  # the two views of an image differ


def test_nt_xent_known_values():
    n = 4
    same = torch.ones(2 * n, 3)  # every pair indistinguishable: uniform over 2n - 1 candidates
    assert mri.nt_xent(same, 0.5).item() == pytest.approx(np.log(2 * n - 1))
    basis = torch.eye(n)
    aligned = torch.cat([basis, basis])  # each view matches only its partner
    assert mri.nt_xent(aligned, 0.05).item() < 1e-6
