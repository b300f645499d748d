"""File-based kinds on tiny fixtures: splits by subject, caching, every bad-input branch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import DataConfig, files, fingerprint_of, parse_spec
from bench.data.images import square_resize
from bench.data.listing import subject_key
from bench.errors import ArtefactError, DataError
from tests.conftest_data import (load, make_adni, make_folder, make_nifti, make_oasis,
                                 write_image, write_volume)

CONFIG = DataConfig(resolution=32)
MAKERS = {"adni": make_adni, "oasis": make_oasis, "folder": make_folder, "nifti": make_nifti}


@pytest.fixture(params=sorted(MAKERS))
def layout(request, tmp_path):
    return f"{request.param}:{MAKERS[request.param](tmp_path / 'data')}"


def test_every_kind_splits_by_subject_and_caches(layout, tmp_path, monkeypatch):
    ds = load(layout, tmp_path)
    subjects = {name: set(split.subjects) for name, split in ds.splits.items()}
    assert all(subjects.values())
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])
    for split in ds.splits.values():
        assert split.images.shape[1:] == (32, 32) and split.images.dtype == np.uint8
        assert len(split.subjects) == len(split)

    def refuse(*args, **kwargs):
        raise AssertionError("a warm load decoded files")

    monkeypatch.setattr(files, "decode_all", refuse)
    warm = load(layout, tmp_path)
    assert warm.fingerprint == ds.fingerprint and isinstance(warm.splits["val"].images, np.memmap)
    assert all(np.array_equal(warm.splits[k].images, ds.splits[k].images) for k in ds.splits)


def test_adni_counts_labels_and_val_per_label(tmp_path):
    ds = load(f"adni:{make_adni(tmp_path / 'd', train=5, test=2)}", tmp_path, val_fraction=0.2)
    assert ds.label_names == ("AD", "NC")
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [16, 4, 8]
    assert sorted(ds.splits["val"].labels.tolist()) == [0, 0, 1, 1]  # one subject per label
    assert len(set(ds.splits["test"].subjects)) == 4


def test_oasis_subject_is_the_case_and_segmentations_are_ignored(tmp_path):
    ds = load(f"oasis:{make_oasis(tmp_path / 'd')}", tmp_path)
    assert sorted(set(ds.splits["val"].subjects)) == ["case_004", "case_005"]
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [6, 4, 4]
    assert ds.splits["train"].labels is None
    assert ds.notes == ()


def test_oasis_accepts_the_parent_of_keras_png_slices_data(tmp_path):
    make_oasis(tmp_path / "d" / "keras_png_slices_data")
    assert len(load(f"oasis:{tmp_path / 'd'}", tmp_path).splits["train"]) == 6


def test_subject_key_rule():
    from pathlib import Path

    names = {"218391_78.jpeg": "218391", "case_001_slice_0.nii.png": "case_001",
             "sub-01_T1w_12.png": "sub-01_T1w", "scan.png": "scan", "a_1_2.tif": "a_1",
             "brain_x.bmp": "brain_x"}
    assert {n: subject_key(Path(n)) for n in names} == names


def test_folder_split_is_seeded_and_by_subject(tmp_path):
    root = make_folder(tmp_path / "d", subjects=12)
    a = load(f"folder:{root}", tmp_path, seed=0)
    b = load(f"folder:{root}", tmp_path, seed=1)
    assert len(set(a.splits["test"].subjects)) == 2 and len(set(a.splits["val"].subjects)) == 1
    assert a.fingerprint != b.fingerprint
    assert set(a.splits["test"].subjects) != set(b.splits["test"].subjects)


def test_pad_to_square_never_stretches():
    x = np.ones((8, 16), np.float32)
    out = square_resize(x, 16)
    assert out[4:12].min() == 1 and out[:4].max() == 0 and out[12:].max() == 0


def test_nifti_slices_contain_brain_and_4d_with_one_frame_is_3d(tmp_path):
    root = make_nifti(tmp_path / "d", volumes=7)
    write_volume(root / "one_frame.nii", (12, 14, 10, 1), seed=9)
    ds = load(f"nifti:{root}", tmp_path)
    total = sum(len(s) for s in ds.splits.values())
    assert 8 * 3 <= total <= 8 * 10  # a band of the 10 axial slices of each volume
    assert all(np.asarray(s.images).max() == 255 for s in ds.splits.values())


@pytest.mark.parametrize("shape, match", [((12, 14), "2-D volume"),
                                          ((12, 14, 10, 2), "4-D volume")])
def test_nifti_2d_or_4d_names_the_file(tmp_path, shape, match):
    root = make_nifti(tmp_path / "d")
    write_volume(root / "bad.nii.gz", shape)
    with pytest.raises(DataError,
                       match=rf"1 unusable files in nifti:.*bad\.nii\.gz \(ValueError: {match}"):
        load(f"nifti:{root}", tmp_path)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_missing_path(kind, tmp_path):
    with pytest.raises(DataError, match=rf"{kind}:.*nowhere: path .*nowhere does not exist"):
        load(f"{kind}:{tmp_path / 'nowhere'}", tmp_path)


def test_unknown_kind_and_missing_path_part():
    with pytest.raises(DataError, match="unknown dataset 'png'; available: mni, oasis:PATH, "
                                        "adni:PATH, folder:PATH, nifti:PATH"):
        parse_spec("png:/x")
    with pytest.raises(DataError, match="needs a path: adni:PATH"):
        parse_spec("adni")


def test_adni_wrong_layout_says_expected_and_found(tmp_path):
    root = tmp_path / "d"
    write_image(root / "train" / "AD" / "1_1.jpeg")
    write_image(root / "training" / "NC" / "2_1.jpeg")
    with pytest.raises(DataError, match=r"expected folders train/AD, train/NC, test/AD, test/NC; "
                                        r"missing train/NC, test/AD, test/NC; "
                                        r"found: train/AD, training/NC"):
        load(f"adni:{root}", tmp_path)


def test_oasis_wrong_layout(tmp_path):
    write_image(tmp_path / "d" / "train" / "case_001_slice_0.nii.png")
    with pytest.raises(DataError, match="expected folders keras_png_slices_train, .*found: train"):
        load(f"oasis:{tmp_path / 'd'}", tmp_path)


def test_empty_split(tmp_path):
    root = make_adni(tmp_path / "d")
    for path in (root / "test").rglob("*.jpeg"):
        path.unlink()
    with pytest.raises(DataError, match=r"split 'test' of adni:.* is empty; expected images in"):
        load(f"adni:{root}", tmp_path)


def test_too_few_subjects_for_three_splits(tmp_path):
    root = make_folder(tmp_path / "d", subjects=2)
    with pytest.raises(DataError, match=r"split 'train' of folder:.* is empty; 2 subjects"):
        load(f"folder:{root}", tmp_path)


def test_truncated_image_fails_or_is_skipped_with_a_note(tmp_path):
    root = make_adni(tmp_path / "d")
    bad = root / "train" / "AD" / "1000_60.jpeg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"1 unusable files in adni:.*1000_60\.jpeg \(OSError"):
        load(f"adni:{root}", tmp_path)
    ds = load(f"adni:{root}", tmp_path, skip_bad=True)
    assert sum(len(s) for s in ds.splits.values()) == 23
    assert any(n.startswith("skipped 1 unusable files: ") and "1000_60.jpeg" in n for n in ds.notes)


def test_non_image_file_among_images(tmp_path):
    root = make_oasis(tmp_path / "d")
    (root / "keras_png_slices_test" / "README.txt").write_text("hello")
    with pytest.raises(DataError, match=r"1 unusable entries in oasis:.*README\.txt "
                                        r"\(not an image file\); remove or fix them"):
        load(f"oasis:{root}", tmp_path)
    ds = load(f"oasis:{root}", tmp_path, skip_bad=True)
    assert any("skipped 1 unusable entries" in n and "README.txt" in n for n in ds.notes)


def test_corrupt_file_with_an_image_suffix(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "group0" / "sub99_0.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"1 unusable files in folder:.*sub99_0\.png \("):
        load(f"folder:{root}", tmp_path)


def test_mixed_sizes_where_the_layout_promises_one(tmp_path):
    root = make_adni(tmp_path / "d")
    write_image(root / "test" / "NC" / "5100_60.jpeg", size=(30, 30))
    with pytest.raises(DataError, match=r"1 images of another size in adni:.*5100_60\.jpeg "
                                        r"\(30x30, expected 24x20 like 23 others\)"):
        load(f"adni:{root}", tmp_path)
    ds = load(f"adni:{root}", tmp_path, skip_bad=True)
    assert len(ds.splits["test"]) == 7


def test_rgb_and_16_bit_are_converted_and_said_once(tmp_path):
    root = make_folder(tmp_path / "d")
    write_image(root / "group0" / "sub00_0.png", (20, 16), mode="RGB")
    write_image(root / "group0" / "sub02_0.png", (20, 16), mode="RGB")
    write_image(root / "group1" / "sub01_0.png", (20, 16), mode="I;16")
    notes = load(f"folder:{root}", tmp_path).notes
    assert len([n for n in notes if "converted 2 images RGB -> grey" in n]) == 1
    assert len([n for n in notes if "images I;16 -> 8-bit" in n]) == 1


def test_subject_in_two_splits_or_two_labels(tmp_path):
    root = make_adni(tmp_path / "d")
    write_image(root / "test" / "AD" / "1000_99.jpeg")
    with pytest.raises(DataError, match=r"subject '1000' is in two splits"):
        load(f"adni:{root}", tmp_path)
    (root / "test" / "AD" / "1000_99.jpeg").unlink()
    write_image(root / "train" / "NC" / "1000_99.jpeg")
    with pytest.raises(DataError, match=r"subject '1000' is in two labels \(AD, NC\)"):
        load(f"adni:{root}", tmp_path)


def test_a_changed_file_changes_the_fingerprint(tmp_path):
    root = make_folder(tmp_path / "d")
    before = fingerprint_of(f"folder:{root}", CONFIG)[0]
    path = root / "group0" / "sub00_0.png"
    os.utime(path, ns=(1, 1))
    assert fingerprint_of(f"folder:{root}", CONFIG)[0] != before


def test_a_copy_or_a_restored_folder_is_the_same_dataset_but_other_pixels_are_not(layout,
                                                                                   tmp_path):
    """The dataset's fingerprint (what backbones and tables key on) is its decoded content; the
    cache entry is keyed by the source files, so a copy is decoded again, once."""
    kind, _, path = layout.partition(":")
    ds = load(layout, tmp_path)
    copy = shutil.copytree(path, tmp_path / "elsewhere" / Path(path).name,
                           copy_function=shutil.copy)  # new mtimes
    for f in Path(copy).rglob("*"):
        if f.is_file():
            os.utime(f, ns=(1, 1))
    again = load(f"{kind}:{copy}", tmp_path)
    assert again.fingerprint == ds.fingerprint
    assert len(list((tmp_path / "cache" / "data").glob(f"{kind}-*"))) == 2  # decoded twice
    victim = next(f for f in sorted(Path(copy).rglob("*")) if f.is_file() and f.suffix in
                  (".png", ".jpeg", ".jpg", ".gz", ".nii") and "_seg_" not in f.parent.name)
    if victim.suffix in (".gz", ".nii"):
        write_volume(victim, seed=99)
    else:
        write_image(victim, Image.open(victim).size, seed=99)
    assert load(f"{kind}:{copy}", tmp_path).fingerprint != ds.fingerprint


def test_a_damaged_cache_entry_is_an_error_not_a_silent_rebuild(tmp_path):
    load(f"oasis:{make_oasis(tmp_path / 'd')}", tmp_path)
    next((tmp_path / "cache" / "data").glob("oasis-*/val.npy")).unlink()
    with pytest.raises(ArtefactError, match=r"val.npy is missing from a finished artefact.*--force"):
        load(f"oasis:{tmp_path / 'd'}", tmp_path)
