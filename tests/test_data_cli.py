"""`bench data inspect` through typer's CliRunner on tiny fixtures."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from bench.cli_data import data_app
from bench.data.inspect import intensity_stats
from tests.conftest_data import make_adni

runner = CliRunner()


def test_inspect_reports_counts_subjects_and_writes_a_montage(tmp_path):
    root = make_adni(tmp_path / "d", train=5, test=2)
    montage = tmp_path / "m.png"
    args = ["inspect", f"adni:{root}", "--resolution", "32", "--cache-dir", str(tmp_path / "c"),
            "--montage", str(montage)]
    result = runner.invoke(data_app, args)
    assert result.exit_code == 0, result.output
    rows = [line.replace("│", " ").split() for line in result.stdout.splitlines()]
    lines = {row[0]: row[1:5] for row in rows  # the summary table's rows (12 cells)
             if row[:1] in (["train"], ["val"], ["test"]) and len(row) == 12}
    # images, subjects, AD, NC per split: 10 subjects of 2 slices in train, 1 per label to val
    assert lines == {"train": ["16", "8", "8", "8"], "val": ["4", "2", "2", "2"],
                     "test": ["8", "4", "4", "4"]}
    assert Image.open(montage).size == (8 * 34 - 2, 3 * 34 - 2)


def test_inspect_default_montage_lands_beside_the_cache(tmp_path):
    root = make_adni(tmp_path / "d")
    result = runner.invoke(data_app, ["inspect", f"adni:{root}", "--resolution", "32",
                                      "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "c" / "montages").glob("adni-*.png"))) == 1


def test_inspect_user_errors_are_one_line_with_exit_code_2(tmp_path):
    result = runner.invoke(data_app, ["inspect", "pngs:/x", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: unknown dataset 'pngs'; available: mni, oasis:PATH, "
                                     "adni:PATH, folder:PATH, nifti:PATH")
    result = runner.invoke(data_app, ["inspect", "mni", "--resolution", "48",
                                      "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "resolution must be one of (32, 64, 128, 256)" in result.stderr


def test_intensity_stats_known_values():
    images = np.zeros((2, 10, 10), np.uint8)
    images[1] = 200  # half the pixels 0, half 200
    mean, std, percentiles = intensity_stats(images)
    assert mean == 100.0 and std == 100.0
    assert percentiles == {1: 0, 5: 0, 50: 0, 95: 200, 99: 200}


def test_inspect_prints_notes_and_a_symlink_loop_is_one_line(tmp_path):
    import os

    root = make_adni(tmp_path / "d")
    (root / "README.txt").write_text("about")
    args = ["inspect", f"adni:{root}", "--resolution", "32", "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert f"note: adni:{root}: ignored 1 entries outside the layout: README.txt" in result.stdout
    os.symlink("..", root / "train" / "up")
    result = runner.invoke(data_app, ["inspect", f"folder:{root}", "--cache-dir",
                                      str(tmp_path / "c")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: symlink loop: ") and result.stderr.count("\n") == 1
