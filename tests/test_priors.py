"""The prior contract, checked on every registered prior; the registry's error paths."""

from __future__ import annotations

import math

import pytest
import torch

import priors
from priors import CodeSet, NoLikelihoodError, NullProgress, Prior, PriorError, get_prior
from priors.base import Registry

K, GRID, N_CLASSES = 12, (4, 4), 3


def tiny_split(n: int, seed: int) -> CodeSet:
    g = torch.Generator().manual_seed(seed)
    return CodeSet(torch.randint(0, K, (n, *GRID), generator=g), K,
                   torch.randint(0, N_CLASSES, (n,), generator=g))


def make(name: str, num_classes: int = 0) -> Prior:
    cls = get_prior(name)
    codebook = torch.randn(K, 4, generator=torch.Generator().manual_seed(0))
    return cls(cls.preset("tiny"), num_codes=K, grid=GRID, num_classes=num_classes,
               codebook=codebook)


@pytest.fixture(scope="module", params=priors.available_priors())
def fitted(request) -> tuple[Prior, torch.Tensor | None]:
    """Each registered prior fitted on tiny random codes; conditional ones with labels."""
    cls = get_prior(request.param)
    num_classes = N_CLASSES if cls.conditional else 0
    prior = make(request.param, num_classes)
    train, val = tiny_split(16, 0), tiny_split(4, 1)
    result = prior.fit(train, val, seed=0, progress=NullProgress())
    assert all(isinstance(v, float) for v in result.values())
    labels = torch.tensor([0, 1, 2, 0, 1]) if num_classes else None
    return prior, labels


def test_sample_shape_dtype_range(fitted):
    prior, labels = fitted
    codes = prior.sample(5, generator=torch.Generator().manual_seed(0), labels=labels)
    assert codes.shape == (5, *GRID) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < K


def test_log_prob_finite_and_equal_for_equal_inputs(fitted):
    prior, labels = fitted
    codes = tiny_split(5, 2).codes
    codes[3] = codes[0]
    if labels is not None:
        labels = labels.clone()
        labels[3] = labels[0]
    if not prior.has_likelihood:
        with pytest.raises(NoLikelihoodError, match=prior.name):
            prior.log_prob(codes, labels)
        return
    lp = prior.log_prob(codes, labels)
    assert lp.shape == (5,) and torch.isfinite(lp).all() and (lp < 0).all()
    assert torch.allclose(lp[3], lp[0], rtol=0, atol=1e-6)


def test_state_round_trip_reproduces_samples_and_log_prob(fitted):
    prior, labels = fitted
    fresh = make(prior.name, prior.num_classes)
    fresh.load_state_dict(prior.state_dict())
    draw = lambda p: p.sample(5, generator=torch.Generator().manual_seed(7), labels=labels)  # noqa: E731
    assert torch.equal(draw(prior), draw(fresh))
    if prior.has_likelihood:
        codes = tiny_split(5, 3).codes
        assert torch.equal(prior.log_prob(codes, labels), fresh.log_prob(codes, labels))


def test_conditional_prior_requires_labels(fitted):
    prior, labels = fitted
    if labels is None:
        pytest.skip("unconditional")
    with pytest.raises(PriorError, match="labels"):
        prior.sample(2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", priors.available_priors())
@pytest.mark.parametrize("preset", priors.PRESETS)
def test_presets_are_configs(name, preset):
    cls = get_prior(name)
    assert isinstance(cls.preset(preset), cls.Config)


@pytest.mark.parametrize("name", priors.available_priors())
def test_fit_is_deterministic_given_seed(name):
    num_classes = N_CLASSES if get_prior(name).conditional else 0
    a, b = make(name, num_classes), make(name, num_classes)
    for p in (a, b):
        p.fit(tiny_split(8, 0), tiny_split(2, 1), seed=3, progress=NullProgress())
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", priors.available_priors())
def test_construction_and_fit_leave_the_global_rng_alone(name):
    before = torch.random.get_rng_state()
    prior = make(name, N_CLASSES if get_prior(name).conditional else 0)
    prior.fit(tiny_split(4, 0), tiny_split(2, 1), seed=0, progress=NullProgress())
    assert torch.equal(torch.random.get_rng_state(), before)


def test_uniform_bits_per_code_is_log2_k():
    prior = make("uniform")
    codes = tiny_split(6, 0).codes
    bits = -prior.log_prob(codes) / (math.log(2) * codes[0].numel())
    assert bits.dtype == torch.float64  # equal to log2 K up to the last bit of a float64
    assert torch.allclose(bits, torch.full((6,), math.log2(K), dtype=torch.float64),
                          rtol=1e-15, atol=0)


def test_unigram_is_finite_on_unseen_codes_and_beats_uniform_on_skewed_data():
    prior = make("unigram")
    train = CodeSet(torch.zeros(8, *GRID, dtype=torch.int64), K)
    prior.fit(train, train, seed=0, progress=NullProgress())
    assert torch.isfinite(prior.log_prob(torch.full((1, *GRID), K - 1))).all()
    assert (prior.log_prob(train.codes) > make("uniform").log_prob(train.codes)).all()


def test_codes_are_validated():
    prior = make("unigram")
    with pytest.raises(PriorError, match=r"codes must lie in \[0, 12\)"):
        prior.log_prob(torch.full((1, *GRID), K))
    with pytest.raises(PriorError, match="codes must be"):
        prior.log_prob(torch.zeros(1, 3, 3, dtype=torch.int64))


def test_registering_a_second_class_under_a_taken_name_raises():
    class Impostor(get_prior("uniform")):
        pass

    with pytest.raises(PriorError, match="'uniform' is taken"):
        priors.REGISTRY.add("uniform", Impostor)
    assert get_prior("uniform") is not Impostor


def test_unknown_name_suggests_and_lists():
    with pytest.raises(PriorError, match=r"did you mean 'pixelcnn'.*available: .*uniform"):
        get_prior("pixelcn")
    with pytest.raises(PriorError, match=r"unknown prior 'zzz'; available: "):
        get_prior("zzz")


def test_registry_rejects_non_priors_and_bad_presets():
    reg = Registry(group="bench.priors.none")
    with pytest.raises(PriorError, match="not a Prior subclass"):
        reg.add("x", int)
    with pytest.raises(PriorError, match="unknown preset 'huge'"):
        get_prior("pixelcnn").preset("huge")


@pytest.mark.parametrize("field,value,match", [
    ("epochs", 0, "epochs must be >= 1"), ("lr", 0.0, "lr must be > 0"),
    ("channels", 7, "channels must be an even number"), ("kernel", 4, "kernel must be odd"),
    ("warmup_frac", 1.0, r"warmup_frac must be in \[0, 1\)"),
    ("grad_clip", -1.0, "grad_clip must be >= 0"),
])
def test_pixelcnn_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        get_prior("pixelcnn").Config(**{field: value})


def test_unigram_config_validation():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        get_prior("unigram").Config(alpha=0.0)


def test_dcgan_needs_the_codebook():
    cls = get_prior("dcgan")
    with pytest.raises(PriorError, match="dcgan needs the frozen codebook"):
        cls(cls.preset("tiny"), num_codes=K, grid=GRID)
    with pytest.raises(PriorError, match=r"codebook must be \(12, D\)"):
        cls(cls.preset("tiny"), num_codes=K, grid=GRID, codebook=torch.zeros(K + 1, 4))


@pytest.mark.parametrize("name,field,value,match", [
    ("dcgan", "sample_mode", "mode", "sample_mode must be 'sample' or 'argmax'"),
    ("dcgan", "tau", 0.0, "tau must be > 0"), ("dcgan", "beta1", 1.0, r"beta1 must be in \[0, 1\)"),
    ("transformer", "n_heads", 3, "dim must be a multiple of n_heads=3"),
    ("transformer", "positions", "3d", "positions must be '2d' or '1d'"),
    ("gated-pixelcnn", "first_kernel", 1, "first_kernel must be odd and >= 3"),
    ("gated-pixelcnn", "n_layers", 0, "n_layers must be >= 1"),
])
def test_config_validation(name, field, value, match):
    with pytest.raises(ValueError, match=match):
        get_prior(name).Config(**{field: value})


def test_dcgan_argmax_mode_is_deterministic_given_noise():
    cls = get_prior("dcgan")
    prior = cls(cls.Config(noise_dim=4, channels=4, n_stages=1, sample_mode="argmax"),
                num_codes=K, grid=GRID, codebook=torch.randn(K, 3))
    draw = lambda: prior.sample(3, generator=torch.Generator().manual_seed(2))  # noqa: E731
    assert torch.equal(draw(), draw())
