"""Subjects stored twice (`bench data inspect`'s twins): the search against a brute-force
loop, and the report on an ADNI-layout fixture with one training subject copied into test."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli_data import data_app
from bench.data import DataConfig, load_dataset
from bench.data.base import ImageDataset, Split
from bench.data.inspect import (TWIN_RMS, TWIN_SIDE, find_twins, nearest_rms, pooled,
                                subject_stacks, twin_notes, twin_pairs)
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
    # subjects interleaved in storage; "0" has 1 slice, not the common 2: left out (it sorts
    # first, so a wrong offset past a skipped subject would show)
    split = Split(images, np.array(["b", "a", "b", "0", "a"]))
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
    train = rng.integers(0, 256, (9, 32, 32), dtype=np.uint8)  # subjects s0..s2, 3 slices each
    subjects = ["s0"] * 3 + ["s1"] * 3 + ["s2"] * 3
    noisy = np.clip(train[3:6].astype(int) + rng.integers(-2, 3, (3, 32, 32)), 0, 255)
    test = np.concatenate([noisy.astype(np.uint8), rng.integers(0, 256, (3, 32, 32),
                                                                dtype=np.uint8)])
    ds = dataset(train, subjects, test, ["t0"] * 3 + ["t1"] * 3)
    twins = {t.split: t for t in find_twins(ds)}
    t = twins["test"]
    assert (t.subjects, t.compared, t.twins, t.slices) == (2, 2, 1, 3)
    assert twins["train"].twins == 0 and twins["val"].compared == 0
    stacks = [pooled(test[i:i + 3]).ravel() for i in (0, 3)]
    refs = np.stack([pooled(train[i:i + 3]).ravel() for i in (0, 3, 6)])
    rms = [min(np.sqrt(np.mean((q.astype(np.float64) - r) ** 2)) for r in refs) for q in stacks]
    assert t.nearest_median == pytest.approx(np.median(rms))
    assert t.nearest_above == pytest.approx(max(rms)) and max(rms) > 0.1
    assert [(a, b) for a, b, _ in twin_pairs(ds, "test")] == [("t0", "s1")]
    assert twin_notes(list(twins.values())) == [
        f"test: 1 of 2 subjects compared (3 slices) match a training subject to RMS < {TWIN_RMS} "
        f"(near-identical scans under two IDs?); test scores on them can reward a prior that "
        f"copies training grids"]
    # the same scan twice inside train: both copies count, and train gets no note
    train2 = np.concatenate([train, train[:3]])
    twins = find_twins(dataset(train2, subjects + ["s3"] * 3, test[3:], ["t1"] * 3))
    assert [(t.split, t.twins, t.slices) for t in twins] == [("train", 2, 6), ("val", 0, 0),
                                                             ("test", 0, 0)]
    assert twin_notes(twins) == []


def test_subjects_of_other_slice_counts_are_said_and_single_slices_are_not_checked():
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, (7, 32, 32), dtype=np.uint8)  # t1 has 4 slices, not 3
    twins = find_twins(dataset(train, ["s0"] * 3 + ["s1"] * 3, test, ["t0"] * 3 + ["t1"] * 4))
    assert (twins[2].subjects, twins[2].compared) == (2, 1)
    assert twin_notes(twins) == ["test: 1 of 2 subjects not compared for twins (their slice "
                                 "count is not the training split's usual one)"]
    # one slice a subject (a folder tree without slice numbers): blank slices would be twins
    blank = np.zeros((4, 32, 32), np.uint8)
    assert find_twins(dataset(blank, ["a", "b", "c", "d"], blank[:1], ["e"])) == []


def test_inspect_reports_a_training_subject_copied_into_test(tmp_path):
    root = make_adni(tmp_path / "d", train=5, test=2, slices=3)
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
            if row[:1] in (["train"], ["val"], ["test"]) and len(row) == 7}
    assert rows == {"train": ["8", "8", "0"], "val": ["2", "2", "0"], "test": ["5", "5", "1"]}
    assert "test: 1 of 5 subjects compared (3 slices) match a training subject" in " ".join(
        result.stdout.split())


def copy_a_training_subject_into_test(root, tmp_path) -> None:
    """make_adni's first training subject (as `bench run` splits it: data seed 0) stored again
    in test under a new ID."""
    ds = load_dataset(f"adni:{root}", DataConfig(resolution=32), cache_dir=tmp_path / "probe")
    subject = str(ds.splits["train"].subjects[0])
    source = next(root.glob(f"train/*/{subject}_*.jpeg")).parent
    for f in source.glob(f"{subject}_*.jpeg"):
        shutil.copy(f, root / "test" / source.name / f.name.replace(f"{subject}_", "7001_"))


def test_a_run_notes_test_twins_records_them_and_compare_says_so(tmp_path):
    from bench.cli import app
    root = make_adni(tmp_path / "d", train=6, test=5, slices=3)
    copy_a_training_subject_into_test(root, tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--prior", "unigram", "--preset", "tiny", "--dataset",
                                 f"adni:{root}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: test: 1 of 11 subjects compared (3 slices) match a training subject" in " ".join(
        result.stderr.split())
    record = json.loads(next(out.glob("runs/unigram-*/record.json")).read_text())
    assert record["twins"] == {"train": 0, "val": 0, "test": 1}
    assert len(list(out.glob("scores/twins-*"))) == 1  # found once, stored
    result = runner.invoke(app, ["compare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ("twins of training subjects (near-identical scans under two IDs): 1 in test" in
            (out / "comparison.md").read_text())
