"""Bad input the file-based kinds must name: names outside a layout's pattern, empty classes,
entries outside the layout, files reached twice through links, symlink loops; class counts."""

from __future__ import annotations

import os

import pytest

from bench.data import files, fingerprint_of
from bench.data.base import DataConfig
from bench.errors import DataError
from tests.conftest_data import load, make_adni, make_folder, make_oasis, write_image

CONFIG = DataConfig(resolution=32)


@pytest.mark.parametrize("name", ["1000.jpeg", "1000-61.jpeg", "1000_61 (copy).jpeg"])
def test_adni_name_outside_the_pattern_is_an_error_or_skipped(tmp_path, name):
    root = make_adni(tmp_path / "d")
    write_image(root / "train" / "AD" / name)
    with pytest.raises(DataError, match=r"1 files not named <subject>_<slice>\.jpeg in adni:.*"
                                        rf"{name.replace('(', '.').replace(')', '.')}; "
                                        r"remove or fix them, or pass --skip-bad"):
        load(f"adni:{root}", tmp_path)
    ds = load(f"adni:{root}", tmp_path, skip_bad=True)
    assert sum(len(s) for s in ds.splits.values()) == 24  # the fixture's files only
    assert [n for n in ds.notes if n.startswith("skipped 1 files not named <subject>_<slice>")]


def test_many_misnamed_files_are_counted_and_the_first_named(tmp_path):
    root = make_adni(tmp_path / "d")
    for i in range(23):
        write_image(root / "test" / "NC" / f"scan{i:02d}.jpeg")
    with pytest.raises(DataError, match=r"^23 files not named .*scan00\.jpeg; .*scan19\.jpeg; "
                                        r"and 3 more; remove"):
        load(f"adni:{root}", tmp_path)


def test_oasis_misnamed_image_and_non_image_are_told_apart(tmp_path):
    root = make_oasis(tmp_path / "d")
    write_image(root / "keras_png_slices_train" / "case_9_s0.png", (16, 16))
    with pytest.raises(DataError, match=r"1 files not named case_<NNN>_slice_<S>\.nii\.png in "
                                        r"oasis:.*case_9_s0\.png; remove"):
        load(f"oasis:{root}", tmp_path)


def test_valid_names_keep_their_fingerprint_under_skip_bad_and_a_skipped_file(tmp_path):
    root = make_adni(tmp_path / "d")
    valid = fingerprint_of(f"adni:{root}", DataConfig(resolution=32, skip_bad=True))[0]
    write_image(root / "train" / "AD" / "scan.jpeg")
    fingerprint, plan = fingerprint_of(f"adni:{root}", DataConfig(resolution=32, skip_bad=True))
    assert fingerprint == valid and len(plan.notes) == 1  # the skipped file is not read


def test_empty_class_folder_is_a_note_and_its_counts_are_zero(tmp_path):
    root = make_adni(tmp_path / "d")
    for path in (root / "train" / "AD").iterdir():
        path.unlink()
    ds = load(f"adni:{root}", tmp_path)
    assert f"adni:{root}: class folder train/AD holds no images" in ds.notes
    assert f"adni:{root}: class AD has no images in train, val" in ds.notes
    assert ds.class_counts("train") == {"AD": 0, "NC": 6}
    assert ds.class_counts("test") == {"AD": 4, "NC": 4}


def test_a_class_carved_out_of_train_entirely_is_a_note(tmp_path):
    root = make_adni(tmp_path / "d", train=3)
    for path in (root / "train" / "AD").glob("100[12]_*"):
        path.unlink()  # one AD train subject left: val takes it
    ds = load(f"adni:{root}", tmp_path)
    assert ds.class_counts("train")["AD"] == 0 and ds.class_counts("val")["AD"] == 2
    assert f"adni:{root}: class AD has no images in train" in ds.notes


def test_class_counts_of_unlabelled_data_and_a_wrong_split(tmp_path):
    ds = load(f"folder:{make_folder(tmp_path / 'd')}", tmp_path)
    assert ds.class_counts("train") == {}
    with pytest.raises(ValueError, match=r"split must be one of train, val, test, got 'training'"):
        ds.class_counts("training")


def test_entries_outside_the_adni_layout_are_named_in_a_note(tmp_path):
    root = make_adni(tmp_path / "d")
    (root / "README.txt").write_text("about")
    (root / "train" / "labels.csv").write_text("id,label")
    write_image(root / "val" / "AD" / "1_1.jpeg")
    (root / "train" / "extra").mkdir()
    ds = load(f"adni:{root}", tmp_path)
    assert ds.notes == (f"adni:{root}: ignored 4 entries outside the layout: "
                        f"README.txt, train/extra/, train/labels.csv, val/",)


def test_entries_beside_keras_png_slices_data_are_noted_and_segmentations_are_not(tmp_path):
    make_oasis(tmp_path / "d" / "keras_png_slices_data")
    (tmp_path / "d" / "download.log").write_text("ok")
    (tmp_path / "d" / "keras_png_slices_data" / "old").mkdir()
    ds = load(f"oasis:{tmp_path / 'd'}", tmp_path)
    assert ds.notes == (f"oasis:{tmp_path / 'd'}: ignored 2 entries outside the layout: "
                        f"download.log, keras_png_slices_data/old/",)


def test_a_folder_symlink_counts_its_files_once(tmp_path):
    root = make_folder(tmp_path / "d")
    before = load(f"folder:{root}", tmp_path)
    os.symlink(root / "group0", root / "group2")
    ds = load(f"folder:{root}", tmp_path / "2")
    assert [len(s) for s in ds.splits.values()] == [len(s) for s in before.splits.values()]
    assert [n for n in ds.notes if "counted once 10 files reached by a second path (a link): "
            f"{root}/group2/sub00_0.png (= {root}/group0/sub00_0.png)" in n]


def test_a_linked_file_in_its_own_class_counts_once(tmp_path):
    root = make_adni(tmp_path / "d")
    os.symlink("1000_60.jpeg", root / "train" / "AD" / "1000_99.jpeg")
    ds = load(f"adni:{root}", tmp_path)
    assert sum(len(s) for s in ds.splits.values()) == 24
    assert [n for n in ds.notes if n.startswith(f"adni:{root}: counted once 1 files")]


def test_one_file_linked_into_two_classes_is_an_error(tmp_path):
    root = make_adni(tmp_path / "d")
    os.symlink(root / "train" / "AD" / "1000_60.jpeg", root / "train" / "NC" / "1100_99.jpeg")
    with pytest.raises(DataError, match=r"adni:.*1100_99\.jpeg and .*1000_60\.jpeg are one file "
                                        r"\(a link\) in train/NC and train/AD; remove one"):
        load(f"adni:{root}", tmp_path)


def test_one_file_in_two_splits_of_an_unlabelled_layout_is_an_error(tmp_path):
    a = files.Source(tmp_path / "a_1.png", "train", "a", file_id=(1, 7))
    b = files.Source(tmp_path / "b_1.png", "test", "b", file_id=(1, 7))
    c = files.Source(tmp_path / "c_1.png", "test", "c")  # no file id: never merged
    assert files.once(files.Layout("folder:x", tmp_path, (a, c)))[0] == (a, c)
    with pytest.raises(DataError, match=r"folder:x: .*b_1\.png and .*a_1\.png are one file "
                                        r"\(a link\) in test and train; remove one"):
        files.once(files.Layout("folder:x", tmp_path, (a, b, c)))


@pytest.mark.parametrize("links", [{"group0/up": ".."}, {"group0/here": "."},
                                   {"group0/to1": "../group1", "group1/to0": "../group0"}])
def test_a_symlink_loop_is_one_error(tmp_path, links):
    root = make_folder(tmp_path / "d")
    for link, target in links.items():
        os.symlink(target, root / link)
    with pytest.raises(DataError, match=r"^symlink loop: .*/group\d/[\w/]+ leads back to "
                                        r".*/d(/group\d)?; remove or replace that link$"):
        load(f"folder:{root}", tmp_path)


@pytest.mark.parametrize("target, why", [("x.png", "Too many levels of symbolic links"),
                                         ("nowhere.png", "No such file or directory")])
def test_a_broken_file_link_is_an_unusable_entry(tmp_path, target, why):
    root = make_folder(tmp_path / "d")
    os.symlink(target, root / "group0" / "x.png")
    with pytest.raises(DataError, match=rf"1 unusable entries in folder:.*x\.png "
                                        rf"\(cannot be read: {why}\)"):
        load(f"folder:{root}", tmp_path)


def test_a_dataset_path_that_is_a_symlink_loop(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(DataError, match=r"adni:.*loop: path .*loop is a broken symlink or a "
                                        r"symlink loop"):
        load(f"adni:{tmp_path / 'loop'}", tmp_path)
