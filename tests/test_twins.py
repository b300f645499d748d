"""Subjects stored twice (`bench data inspect`'s twins): the search against a brute-force
loop, and the report on an ADNI-layout fixture with one training subject copied into test."""

from __future__ import annotations

import shutil

import numpy as np
from typer.testing import CliRunner

from bench.cli_data import data_app
from bench.data import DataConfig, load_dataset
from bench.data.base import ImageDataset, Split
from bench.data.inspect import (TWIN_SIDE, find_twins, nearest_rms, pooled, subject_stacks,
                                twin_pairs)
from tests.conftest_data import make_adni

runner = CliRunner()


def brute_nearest(queries: np.ndarray, refs: np.ndarray,
                  exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for i, q in enumerate(queries):
        out.append(min((np.sqrt(np.mean((q.astype(np.float64) - r) ** 2)), j)
                       for j, r in enumerate(refs) if not (exclude_self and i == j)))
    return np.array([d for d, _ in out]), np.array([j for _, j in out])


def test_nearest_rms_equals_a_brute_force_loop():
    rng = np.random.default_rng(0)
    refs = rng.random((300, 40), dtype=np.float32)  # > 256 queries: two chunks
    queries = np.concatenate([rng.random((5, 40), dtype=np.float32), refs[:3] + 0.001])
    for q, exclude in ((queries, False), (refs, True)):
        rms, index = nearest_rms(q, refs, exclude_self=exclude)
        want, want_index = brute_nearest(q, refs, exclude)
        np.testing.assert_allclose(rms, want, atol=1e-6)
        np.testing.assert_array_equal(index, want_index)


def test_pooled_is_the_area_mean_and_stacks_keep_each_subjects_slices_in_order():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 32, 32), dtype=np.uint8)
    p = pooled(images)
    assert p.shape == (5, TWIN_SIDE ** 2)
    np.testing.assert_allclose(p[2, 0], images[2, :2, :2].mean() / 255, rtol=1e-6)
    # subjects interleaved in storage; "c" has 1 slice, not the common 2: left out
    split = Split(images, np.array(["b", "a", "b", "c", "a"]))
    names, stacks = subject_stacks(split, 2)
    assert names.tolist() == ["a", "b"]
    np.testing.assert_array_equal(stacks, np.stack([np.concatenate([p[1], p[4]]),
                                                    np.concatenate([p[0], p[2]])]))


def dataset(train: np.ndarray, train_subjects: list[str], test: np.ndarray,
            test_subjects: list[str]) -> ImageDataset:
    empty = Split(np.zeros((0, 32, 32), np.uint8), np.array([], str))
    return ImageDataset("x", "folder", DataConfig(resolution=32), "f",
                        {"train": Split(train, np.array(train_subjects)), "val": empty,
                         "test": Split(test, np.array(test_subjects))})


def test_a_copied_subject_is_a_twin_and_slight_noise_keeps_it_one():
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)  # subjects s0..s2, 2 slices each
    subjects = ["s0", "s0", "s1", "s1", "s2", "s2"]
    noisy = np.clip(train[2:4].astype(int) + rng.integers(-2, 3, (2, 32, 32)), 0, 255)
    test = np.concatenate([noisy.astype(np.uint8), rng.integers(0, 256, (2, 32, 32),
                                                                dtype=np.uint8)])
    twins = {t.split: t for t in find_twins(dataset(train, subjects, test,
                                                    ["t0", "t0", "t1", "t1"]))}
    assert (twins["test"].compared, twins["test"].twins, twins["test"].slices) == (2, 1, 2)
    assert twins["train"].twins == 0 and twins["val"].compared == 0
    assert twins["test"].nearest_above > 0.1  # the other test subject: random, far away
    ds = dataset(train, subjects, test, ["t0", "t0", "t1", "t1"])
    assert [(a, b) for a, b, _ in twin_pairs(ds, "test")] == [("t0", "s1")]
    # the same scan twice inside train: both copies count
    train2 = np.concatenate([train, train[:2]])
    twins = {t.split: t for t in find_twins(dataset(train2, subjects + ["s3", "s3"], test[2:],
                                                    ["t1", "t1"]))}
    assert (twins["train"].twins, twins["test"].twins) == (2, 0)


def test_inspect_reports_a_training_subject_copied_into_test(tmp_path):
    root = make_adni(tmp_path / "d", train=5, test=2)
    ds = load_dataset(f"adni:{root}", DataConfig(resolution=32), cache_dir=tmp_path / "c")
    subject = str(ds.splits["train"].subjects[0])  # in train, not carved into val
    source = next(root.glob(f"train/*/{subject}_*.jpeg")).parent
    for f in source.glob(f"{subject}_*.jpeg"):
        shutil.copy(f, root / "test" / source.name / f.name.replace(f"{subject}_", "7001_"))
    result = runner.invoke(data_app, ["inspect", f"adni:{root}", "--resolution", "32",
                                      "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    rows = {row[0]: row[1:4] for row in (line.replace("│", " ").split()
                                          for line in result.stdout.splitlines())
            if row[:1] in (["train"], ["val"], ["test"]) and len(row) == 6}
    assert rows == {"train": ["8", "0", "0"], "val": ["2", "0", "0"], "test": ["5", "1", "2"]}
    assert "test: 1 of 5 subjects (2 slices) match a training subject" in " ".join(
        result.stdout.split())
