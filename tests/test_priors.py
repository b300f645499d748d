"""The prior contract (`priors.contract`) on every registered prior and every entry point that
failed to load; the registry's error paths; per-prior known values and config validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import priors
from priors import CodeSet, NullProgress, Prior, PriorError, contract, get_prior
from priors.base import Registry
from priors.checking import GRID, K, tiny_split


def make(name: str, num_classes: int = 0) -> Prior:
    return contract.Subject(name, get_prior(name)).make(num_classes=num_classes)


@pytest.fixture(scope="module", params=contract.names_to_check())
def subject(request) -> contract.Subject:
    """One per prior, shared by its rules (they reuse one tiny fit). A broken entry point is a
    subject too: its entry-point rule fails, so it is never silently left out."""
    return contract.load_subject(request.param)


@pytest.mark.parametrize("rule", contract.RULES, ids=lambda r: r.name)
def test_contract(subject, rule):
    result = contract.run_rule(subject, rule)
    if result.status == "skip":
        pytest.skip(result.message)
    assert result.ok, result.line()


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
    ("dcgan", "d_lr_scale", 0.0, "d_lr_scale must be > 0"),
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


def test_dcgan_minibatch_std_scores_a_grid_by_its_batch():
    """With minibatch_std the discriminator's score of a grid depends on the rest of its batch
    (the batch's feature spread is one more input of its last layer): the same grid scores
    differently beside copies of itself than beside other grids; without it, the same. The
    spread passes gradients back to the inputs (what the generator learns from); a batch of
    one row (a rank's stand-in row under DDP) gives finite ones."""
    from priors.dcgan import Discriminator
    x = torch.randn(4, 3, 8, 8)
    same = x[:1].expand(4, -1, -1, -1)
    for on in (True, False):
        cfg = get_prior("dcgan").Config(channels=4, n_stages=2, minibatch_std=on)
        torch.manual_seed(0)
        disc = Discriminator(3, (8, 8), 0, cfg).eval()
        assert disc.features == (8 + on) * 2 * 2
        with torch.no_grad():
            varied, collapsed = disc(x, None)[0], disc(same, None)[0]
        assert torch.isclose(varied, collapsed).item() is not on
    cfg = get_prior("dcgan").Config(channels=4, n_stages=2, minibatch_std=True, spectral_norm=False)
    disc = Discriminator(3, (8, 8), 0, cfg)
    with torch.no_grad():  # the score through the spread alone: the other features weigh 0
        disc.out.weight.view(1, 9, 2, 2)[:, :8] = 0
    for rows in (x, x[:1]):
        rows = rows.clone().requires_grad_()
        disc(rows, None).sum().backward()
        assert torch.isfinite(rows.grad).all()
        assert bool(rows.grad.abs().sum() > 0) is (len(rows) > 1)  # one row: no spread to move


def test_fields_added_later_stay_out_of_a_fit_key_at_their_default():
    """dcgan's minibatch_std and d_lr_scale came after dcgan fits were stored: at their defaults
    they are not in the cache key, so those fits are found again; set, they are."""
    from priors.base import cache_key_fields
    cfg = get_prior("dcgan").preset("quick")
    assert {"minibatch_std", "d_lr_scale"}.isdisjoint(cache_key_fields(cfg))
    assert cache_key_fields(cfg) == {k: v for k, v in dataclasses.asdict(cfg).items()
                                     if k not in ("minibatch_std", "d_lr_scale")}
    standard = cache_key_fields(get_prior("dcgan").preset("standard"))
    assert standard["minibatch_std"] is True and standard["d_lr_scale"] == 4.0


def test_unigram_counts_and_log_prob_equal_their_one_hot_definition():
    """The fit counts (a bincount, so that 32x32 grids of K = 256 fit in memory) and log_prob
    (indexing) equal the one-hot sums and gathers they replace, per class."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 5, (30, 3, 4), generator=g)
    labels = torch.randint(0, 2, (30,), generator=g)
    cls = priors.get_prior("unigram")
    prior = cls(cls.Config(alpha=0.5), num_codes=5, grid=(3, 4), num_classes=2)
    prior.fit(CodeSet(codes, 5, labels), CodeSet(codes[:0], 5, labels[:0]), seed=0,
              progress=NullProgress())
    one_hot = torch.nn.functional.one_hot(codes, 5).double()
    expected = torch.stack([one_hot[labels == c].sum(0) for c in range(2)])
    assert torch.equal(prior.counts, expected)
    smoothed = expected + 0.5
    logp = (smoothed / smoothed.sum(-1, keepdim=True)).log()[labels]
    want = logp.gather(-1, codes[..., None])[..., 0].sum(dim=(1, 2))
    assert torch.allclose(prior.log_prob(codes, labels), want, rtol=0, atol=1e-12)
