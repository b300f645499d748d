"""The embedded `mni` default: seeded, distinct, split by slice, cached."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data import DataConfig, load_dataset, mni, parse_spec
from bench.data.images import axial_view
from bench.data.mni_augment import generate_split, seeded_generator
from bench.errors import DataError

CONFIG = DataConfig(resolution=32, mni_sizes=(40, 8, 12))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def dataset(cache_dir):
    return load_dataset("mni", CONFIG, cache_dir=cache_dir)


def test_sizes_shapes_and_no_labels(dataset):
    assert [len(dataset.splits[s]) for s in ("train", "val", "test")] == [40, 8, 12]
    for split in dataset.splits.values():
        assert split.images.shape[1:] == (32, 32) and split.images.dtype == np.uint8
        assert split.labels is None and len(split.subjects) == len(split)
    assert dataset.label_names == () and dataset.kind == "mni"


def test_no_slice_in_two_splits(dataset):
    keys = {name: set(split.subjects) for name, split in dataset.splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


def test_images_are_distinct_and_not_blank(dataset):
    x = np.concatenate([np.asarray(s.images) for s in dataset.splits.values()])
    flat = x.reshape(len(x), -1)
    assert len(np.unique(flat, axis=0)) == len(x)
    assert (flat.max(axis=1) > 100).all()


def test_warm_load_does_not_generate(dataset, cache_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("warm load regenerated the template slices")

    monkeypatch.setattr(mni, "template_slices", refuse)
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


def test_assign_blocks_is_disjoint_complete_and_seeded():
    parts = mni.assign_blocks(32, (2000, 250, 500), seed=3, block=4)
    together = np.sort(np.concatenate(list(parts.values())))
    assert np.array_equal(together, np.arange(32))
    assert len(parts["val"]) == 4 and len(parts["test"]) == 4  # one block each of 8
    again = mni.assign_blocks(32, (2000, 250, 500), seed=3, block=4)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    with pytest.raises(DataError, match="too few blocks"):
        mni.assign_blocks(8, (10, 10, 10), seed=0, block=4)


def test_generation_is_seeded():
    slices, allowed = np.random.default_rng(0).random((6, 16, 16)), np.arange(6)

    def draw(key):
        return generate_split(slices, allowed, 10, seeded_generator(key), mni.AUGMENT, None)

    first, same, other = draw("a"), draw("a"), draw("b")
    assert np.array_equal(first[0], same[0]) and np.array_equal(first[1], same[1])
    assert not np.array_equal(first[0], other[0])


def test_axial_view_is_radiological_nose_up():
    volume = np.zeros((5, 7, 3), np.float32)  # RAS: x right, y anterior, z superior
    volume[4, 6, 1] = 1.0  # most right, most anterior
    view = axial_view(volume, 1)
    assert view.shape == (7, 5) and view[0, 0] == 1.0  # top (nose), image left (subject right)


def test_mni_takes_no_path():
    assert parse_spec("mni") == ("mni", None)
    with pytest.raises(DataError, match="takes no path"):
        parse_spec("mni:/tmp")
