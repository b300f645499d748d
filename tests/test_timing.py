"""`bench.timing`: what `bench perf` times is the real work (same draws, same files). No timed
assertions: only that the numbers exist and the paths agree."""

from __future__ import annotations

import torch

from bench.data import DataConfig
from bench.timing import measure_loading, naive_first_positions, sampling_speed
from priors import get_prior
from tests.conftest_data import make_adni


def pixelcnn(grid=(5, 6)):
    cls = get_prior("pixelcnn")
    return cls(cls.preset("tiny"), num_codes=10, grid=grid)


def test_naive_first_positions_are_the_samples_first_positions():
    prior = pixelcnn()
    full = prior.sample(3, generator=torch.Generator().manual_seed(4), use_cache=False)
    part = naive_first_positions(prior, 3, 8, torch.Generator().manual_seed(4), None)
    assert torch.equal(part.flatten(1)[:, :8], full.flatten(1)[:, :8])
    assert not part.flatten(1)[:, 8:].any()  # the rest was never sampled
    whole = naive_first_positions(prior, 3, 30, torch.Generator().manual_seed(4), None)
    assert torch.equal(whole, full)


def test_sampling_speed_reports_both_paths():
    prior = pixelcnn()
    report = sampling_speed(prior, n=2, naive_positions=5)
    assert report["identical"] == 1.0 and report["naive_extrapolated"] == 1.0
    assert report["speedup"] > 0 and report["cost_forward_equivalents"] > 0
    assert report["cached_runs"] == 1.0
    assert sampling_speed(prior, n=2)["naive_extrapolated"] == 0.0
    assert sampling_speed(prior, n=2, naive_positions=1, repeats=3)["cached_runs"] == 3.0
    assert sampling_speed(prior, n=2, naive_positions=1, repeats=3,
                          repeat_budget_s=0.0)["cached_runs"] == 1.0  # at least one run


def test_measure_loading_reports_cold_and_warm_and_leaves_no_cache(tmp_path):
    root = make_adni(tmp_path / "d")
    result = measure_loading(f"adni:{root}", DataConfig(resolution=32), tmp_path / "c")
    assert result["n_images"] == 24 and result["kind"] == "adni"
    assert result["cold_s"] > 0 and result["warm_s"] > 0 and result["warm_images_per_s"] > 0
    assert list((tmp_path / "c").iterdir()) == []
