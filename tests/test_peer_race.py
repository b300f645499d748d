"""The peer race's judgement: a recipe's lr by time, and degenerate reconstructions flagged
(never ranked) on constructed inputs: flat ones, the same image for every input, <= 2 codes."""

import pytest
import torch

from bench import metrics
from bench.peers import Recipe


def brains(n: int = 6, side: int = 32) -> torch.Tensor:
    """(n, 1, side, side) in [0, 1]: discs of different sizes and brightness, some texture."""
    g = torch.Generator().manual_seed(0)
    axis = torch.linspace(-1, 1, side)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    r = torch.linspace(0.4, 0.9, n)[:, None, None]
    level = torch.linspace(0.5, 0.9, n)[:, None, None]
    disc = ((xx**2 + yy**2) < r**2).float() * level
    return (disc + 0.05 * torch.rand(n, side, side, generator=g)).clamp(0, 1)[:, None]


def test_spread_of_exact_flat_and_identical_reconstructions():
    x = brains()
    exact = metrics.spread_ratios(x, x)
    assert exact == pytest.approx({"within_image": 1.0, "across_images": 1.0})
    flat = torch.full_like(x, 0.3)
    assert metrics.spread_ratios(flat, x) == {"within_image": 0.0, "across_images": 0.0}
    same = x[:1].expand_as(x).clone()  # every image reconstructed as the first
    spread = metrics.spread_ratios(same, x)
    assert spread["across_images"] == 0.0 and spread["within_image"] > 0.5


def test_spread_needs_two_images_and_matching_shapes():
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        metrics.spread_ratios(brains(1), brains(1))
    with pytest.raises(ValueError, match="same shape"):
        metrics.spread_ratios(brains(2), brains(3))


@pytest.mark.parametrize("make_recon, codes, flagged", [
    (lambda x: torch.full_like(x, x.mean()), 40, "within image spread 0 of the data's"),
    (lambda x: x.mean(0, keepdim=True).expand_as(x).clone(), 40, "across images spread 0 of"),
    (lambda x: x, 2, "2 code(s) used"),
    (lambda x: (0.9 * x + 0.05).clamp(0, 1), 40, None),  # blurry-ish but real: kept
    (lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1), 3, None),
])
def test_degenerate_flags_flat_identical_and_collapsed_but_not_real_looking(make_recon, codes,
                                                                               flagged):
    x = brains()
    verdict = metrics.degenerate_reconstruction(metrics.spread_ratios(make_recon(x), x), codes)
    if flagged is None:
        assert verdict == ""
    else:
        assert flagged in verdict


def test_recipe_is_one_cycle_by_time():
    r = Recipe(lr=1e-3, final_lr_frac=0.01, warmup_frac=0.1)
    assert r.at(0.0) == pytest.approx((1e-3 / 25, 0.95))
    assert r.at(0.05) == pytest.approx(((1e-3 / 25 + 1e-3) / 2, 0.90))  # half-way: the mean
    assert r.at(0.1) == pytest.approx((1e-3, 0.85))
    assert r.at(0.55) == pytest.approx(((1e-3 + 1e-5) / 2, 0.90))
    assert r.at(1.0) == r.at(7.0) == pytest.approx((1e-5, 0.95))


def test_recipe_matches_the_backbone_one_cycle_at_step_fractions():
    """The race's schedule is train_vqvae's (OneCycleLR) with time in place of steps."""
    from vqvae import TrainConfig
    from vqvae.train import one_cycle
    total = 200
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    sched = one_cycle(opt, TrainConfig(lr=2e-3, final_lr_frac=0.002), total)
    recipe = Recipe(lr=2e-3, final_lr_frac=0.002, warmup_frac=0.05)
    warm_end, end = 0.05 * total - 1, total - 1  # OneCycleLR's phases end at these steps
    for step in range(total):
        frac = (0.05 * step / warm_end if step <= warm_end
                else 0.05 + 0.95 * (step - warm_end) / (end - warm_end))
        group = opt.param_groups[0]
        assert recipe.at(frac) == pytest.approx((group["lr"], group["betas"][0]), rel=1e-6)
        opt.step()
        sched.step()


@pytest.mark.parametrize("field, value, message", [
    ("lr", 0.0, "lr must be > 0"), ("final_lr_frac", 0.0, "final_lr_frac must be in"),
    ("warmup_frac", 1.0, "warmup_frac must be in")])
def test_recipe_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**{"lr": 1e-3, field: value})
