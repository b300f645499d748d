"""The `full` preset's architecture, end to end on CPU at 256 px: a few steps of each stage on
a handful of embedded `mni` slices, so that the path a GPU user takes is at least exercised."""

import dataclasses

import numpy as np
import pytest
import torch

import priors
from bench import metrics
from bench.data import DataConfig, load_dataset
from bench.extractors import build_extractor
from bench.presets import get_preset
from bench.scoring import SampleSet, make_context, score_samples
from priors import CodeSet, NullProgress
from vqvae import (VQVAE, decode_codes, encode_array, load_backbone, load_export, save_backbone,
                   save_export, train_vqvae)

# the smallest budget each prior config can be given (fields absent from a config are skipped)
TINY_BUDGET = {"epochs": 1, "max_steps": 1, "batch_size": 2, "eval_batch_size": 4}


def tiny_budget(config):
    names = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in TINY_BUDGET.items() if k in names})


@pytest.fixture(scope="module")
def full_export(tmp_path_factory):
    """The full backbone trained for two steps at 256 px, saved, reloaded, and its codes exported."""
    tmp = tmp_path_factory.mktemp("full")
    preset = get_preset("full")
    ds = load_dataset("mni", DataConfig(resolution=preset.resolution, mni_sizes=(4, 4, 8)),
                      cache_dir=tmp / "data")
    torch.manual_seed(0)
    model = VQVAE(preset.vqvae)
    train_cfg = dataclasses.replace(preset.train, epochs=1, batch_size=2)
    summary = train_vqvae(model, np.asarray(ds.splits["train"].images), train_cfg,
                          device=torch.device("cpu"), progress=NullProgress())
    assert summary["steps"] == 2
    save_backbone(model, tmp / "backbone", {"preset": preset.name})
    model, record = load_backbone(tmp / "backbone")
    cpu = torch.device("cpu")
    codes = {s: encode_array(model, sp.images, device=cpu) for s, sp in ds.splits.items()}
    save_export(tmp / "export", codes=codes, labels={}, codebook=model.codebook,
                backbone=record["hash"], meta={"preset": preset.name})
    return preset, ds, model, load_export(tmp / "export", backbone=record["hash"]), tmp


@pytest.mark.slow
def test_full_backbone_makes_32x32_grids_of_512_codes(full_export):
    preset, ds, model, export, _ = full_export
    assert (preset.resolution, preset.grid, preset.vqvae.num_codes) == (256, 32, 512)
    assert export.grid == (32, 32) and export.num_codes == 512
    test = export.codes["test"]
    assert test.shape == (8, 32, 32) and 0 <= int(test.min()) and int(test.max()) < 512
    recon = decode_codes(model, test, device=torch.device("cpu"))
    assert recon.shape == (8, 1, 256, 256) and 0 <= float(recon.min()) and float(recon.max()) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", priors.available_priors())
def test_every_prior_fits_and_samples_full_grids(full_export, name):
    preset, _, model, export, _ = full_export
    cls = priors.get_prior(name)
    config = tiny_budget(preset.prior_config(cls))
    prior = cls(config, num_codes=export.num_codes, grid=export.grid, codebook=export.codebook,
                device="cpu")
    split = {s: CodeSet(codes=export.codes[s], num_codes=export.num_codes) for s in ("train", "val")}
    prior.fit(split["train"], split["val"], seed=0, progress=NullProgress())
    codes = prior.sample(2, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 32, 32) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 512
    assert decode_codes(model, codes, device=torch.device("cpu")).shape == (2, 1, 256, 256)
    if cls.has_likelihood:
        bits = metrics.bits_per_code(prior.log_prob(export.codes["test"][:2]), export.grid)
        assert np.isfinite(bits) and bits > 0


@pytest.mark.slow
def test_full_samples_are_scored_like_any_run(full_export):
    preset, ds, model, export, tmp = full_export
    cpu = torch.device("cpu")
    train = np.asarray(ds.splits["train"].images)
    extractor = build_extractor("mri", train_images=train, cache_dir=tmp / "extractors",
                                device=cpu, seed=0, preset="tiny")
    ctx, rest = make_context(ds.splits["test"].images, None, train, export.codes["test"],
                             export.num_codes, extractor, (), n=4, seed=0,
                             subjects=ds.splits["test"].subjects)
    codes = export.codes["test"][torch.from_numpy(rest)]
    scores = score_samples(SampleSet(decode_codes(model, codes, device=cpu), codes), ctx, seed=0)
    for key in ("fd", "kid", "nn_ssim", "precision", "recall", "memorisation", "diversity_ssim",
                "distinct_codes", "code_perplexity", "code_js_bits"):
        assert np.isfinite(scores[key]), key
    assert 0 <= scores["memorisation"] <= 1 and -1 <= scores["nn_ssim"] <= 1
