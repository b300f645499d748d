"""The embedded `mni` default: synthetic subjects, split by subject, every split over the whole
brain band, seeded, cached."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench.data import DataConfig, load_dataset, mni, parse_spec
from bench.data.images import axial_view, to_uint8
from bench.data.mni_augment import (Subject, draw_subject, rbf_basis, render, render_split,
                                    rotation, seeded_generator, smooth_field)
from bench.errors import DataError

CONFIG = DataConfig(resolution=32, mni_sizes=(40, 8, 12))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def dataset(cache_dir):
    return load_dataset("mni", CONFIG, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def volume():
    return mni.template(32)


def test_sizes_shapes_and_no_labels(dataset):
    assert [len(dataset.splits[s]) for s in ("train", "val", "test")] == [40, 8, 12]
    for split in dataset.splits.values():
        assert split.images.shape[1:] == (32, 32) and split.images.dtype == np.uint8
        assert split.labels is None and len(split.subjects) == len(split)
    assert dataset.label_names == () and dataset.kind == "mni"


def test_splits_are_subject_disjoint_and_subjects_have_several_slices(dataset):
    keys = {name: set(split.subjects) for name, split in dataset.splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert [len(keys[s]) for s in ("train", "val", "test")] == [4, 1, 2]  # 10 a subject, even
    _, per_subject = np.unique(dataset.splits["test"].subjects, return_counts=True)
    assert per_subject.tolist() == [6, 6]


def test_every_subject_of_every_split_spans_the_brain_band(dataset):
    """Brain area (pixels above background) along each subject's slices, ascending: small at
    both ends of the band, largest inside it, relative to the subject's own head size."""
    for name, split in dataset.splits.items():
        area = (np.asarray(split.images) > 40).mean(axis=(1, 2))
        for subject in np.unique(split.subjects):
            profile = area[split.subjects == subject] / area[split.subjects == subject].max()
            assert profile[0] < 0.8 and profile[-1] < 0.8, (name, subject, profile)
            assert 0 < int(np.argmax(profile)) < len(profile) - 1, (name, subject, profile)


def test_levels_take_one_per_stratum_of_the_band(volume):
    lo, hi = volume.band[0] - 0.5, volume.band[1] + 0.5
    for k in (1, 6, 10):
        levels = draw_subject(volume, k, seeded_generator(f"levels{k}"), mni.AUGMENT).levels
        stratum = torch.floor((levels - lo) / ((hi - lo) / k))
        assert stratum.tolist() == list(range(k))


def test_subject_sizes_are_even_and_complete():
    assert mni.subject_sizes(24, 10) == [8, 8, 8]
    assert mni.subject_sizes(25, 10) == [9, 8, 8]
    assert mni.subject_sizes(10, 10) == [10] and mni.subject_sizes(3, 10) == [3]
    plan = mni.subject_plan((96, 24, 32), 10)
    assert [sum(k for _, k in plan[s]) for s in ("train", "val", "test")] == [96, 24, 32]
    ids = [sid for subjects in plan.values() for sid, _ in subjects]
    assert len(ids) == len(set(ids)) == 10 + 3 + 4


def test_images_are_distinct_and_not_blank(dataset):
    x = np.concatenate([np.asarray(s.images) for s in dataset.splits.values()])
    flat = x.reshape(len(x), -1)
    assert len(np.unique(flat, axis=0)) == len(x)
    assert (flat.max(axis=1) > 100).all()


def test_generation_is_deterministic_and_seeded(dataset, tmp_path):
    again = load_dataset("mni", CONFIG, cache_dir=tmp_path / "a")
    for name, split in dataset.splits.items():
        assert np.array_equal(again.splits[name].images, split.images)
        assert np.array_equal(again.splits[name].subjects, split.subjects)
    other = load_dataset("mni", dataclasses.replace(CONFIG, seed=1), cache_dir=tmp_path / "b")
    assert not np.array_equal(other.splits["test"].images, dataset.splits["test"].images)


def test_a_subject_does_not_depend_on_its_batch(volume):
    alone = render_split(volume, [("sub-00003", 5)], 0, mni.AUGMENT, None)
    many = render_split(volume, [("sub-00001", 7), ("sub-00003", 5), ("sub-00004", 4)], 0,
                        mni.AUGMENT, None)
    assert np.array_equal(alone, many[7:12])


def test_identity_draw_reslices_the_template(volume):
    """No deformation, bias, gamma or noise: a subject's image at level z is template slice z
    (checks the coordinate conventions of the 3-D grid)."""
    f64 = torch.float64
    still = Subject(levels=torch.tensor([50.0, 81.0], dtype=f64), matrix=torch.eye(3, dtype=f64),
                    shift=torch.zeros(3, dtype=f64), elastic=torch.zeros(3, 5, 5, 5, dtype=f64),
                    bias=torch.zeros(1, 3, 3, 3, dtype=f64), gamma=1.0, sigma=0.0,
                    rng=torch.Generator().manual_seed(0))
    images = render(volume, [still], mni.AUGMENT).astype(int)
    expected = to_uint8(volume.stack[[50, 81]]).astype(int)
    assert np.abs(images - expected).max() <= 1


def test_smooth_fields_have_unit_std_and_rotations_are_orthonormal():
    basis = rbf_basis(torch.linspace(-1, 1, 7, dtype=torch.float64), 5)
    assert torch.allclose(basis.norm(dim=1), torch.ones(7, dtype=torch.float64))
    coef = torch.randn(4000, 1, 3, 3, 3, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    field = smooth_field(coef, torch.linspace(-1, 1, 4000, dtype=torch.float64), 8)
    assert field.std().item() == pytest.approx(1.0, abs=0.03)
    m = rotation(seeded_generator("r"), mni.AUGMENT)
    assert torch.allclose(m @ m.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(m).item() == pytest.approx(1.0)


def test_augment_rejects_empty_counts():
    with pytest.raises(ValueError, match="slices_per_subject must be >= 1, got 0"):
        mni.Augment(slices_per_subject=0)
    with pytest.raises(ValueError, match="elastic_grid must be >= 1"):
        mni.Augment(elastic_grid=0)


def test_warm_load_does_not_generate(dataset, cache_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("warm load regenerated the template")

    monkeypatch.setattr(mni, "template", refuse)
    again = load_dataset("mni", CONFIG, cache_dir=cache_dir)
    assert again.fingerprint == dataset.fingerprint
    assert np.array_equal(again.splits["test"].images, dataset.splits["test"].images)
    assert isinstance(again.splits["train"].images, np.memmap)


def test_fingerprint_follows_the_config_fields_that_matter():
    from bench.data import fingerprint_of

    base = fingerprint_of("mni", CONFIG)[0]
    assert fingerprint_of("mni", DataConfig(resolution=32, mni_sizes=(40, 8, 12),
                                            val_fraction=0.3))[0] == base
    reseeded = DataConfig(resolution=32, mni_sizes=(40, 8, 12), seed=1)
    assert fingerprint_of("mni", reseeded)[0] != base
    assert fingerprint_of("mni", DataConfig(resolution=64, mni_sizes=(40, 8, 12)))[0] != base


def test_axial_view_is_radiological_nose_up():
    volume = np.zeros((5, 7, 3), np.float32)  # RAS: x right, y anterior, z superior
    volume[4, 6, 1] = 1.0  # most right, most anterior
    view = axial_view(volume, 1)
    assert view.shape == (7, 5) and view[0, 0] == 1.0  # top (nose), image left (subject right)


def test_mni_takes_no_path():
    assert parse_spec("mni") == ("mni", None)
    with pytest.raises(DataError, match="takes no path"):
        parse_spec("mni:/tmp")
