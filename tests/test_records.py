"""What a record says about the code that wrote it."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import bench
from bench import records

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_versions_name_the_source_commit_and_the_time():
    v = records.versions()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v["written_utc"])
    root = Path(bench.__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        assert v["commit"] is None  # an installed wheel says nothing rather than guess
        return
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", v["commit"]) and v["commit"][:12] == head[:12]


@needs_git
def test_a_copy_inside_another_repository_names_no_commit(tmp_path, monkeypatch):
    """bench installed into a virtual environment that lives inside a user's own repository
    must not report that repository's commit as its own."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    package = tmp_path / ".venv" / "site-packages" / "bench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "records.py").write_text("")
    monkeypatch.setattr(bench, "__file__", str(package / "__init__.py"))
    top = subprocess.run(["git", "-C", str(package.parent), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(top).resolve() == tmp_path.resolve()  # git itself sees the enclosing repository
    assert records.source_commit.__wrapped__() is None


def record(run_id: str = "pixelcnn-0123abcd", **fields) -> dict:
    base = {"kind": "prior", "prior": "pixelcnn", "dataset": "adni:/home/alice/data/AD_NC",
            "data": {"kind": "adni", "fingerprint": "f" * 16, "name": "AD_NC"},
            "preset": "quick", "seed": 0, "run_id": run_id, "backbone_hash": "b" * 64,
            "export_hash": "e" * 16, "extractor": {"name": "mri", "id": "x"},
            "scores": {"fd": 1.0}, "path": "/home/alice/results/runs/" + run_id,
            "real_side": "decoded test codes of half the test subjects"}
    return base | fields


def test_carried_records_hold_no_local_path(tmp_path):
    rescored = record("pixelcnn-against-1", against={
        "run": "/home/alice/results/runs/pixelcnn-0123abcd", "run_id": "pixelcnn-0123abcd",
        "dataset": "oasis:/home/alice/oasis", "data": {"kind": "oasis", "fingerprint": "a" * 16,
                                                       "name": "oasis"}})
    written = records.carry([record(), rescored], tmp_path)
    assert len(written) == 2
    for path in written:
        text = path.read_text()
        assert "/home/alice" not in text, text
    carried = {r["run_id"]: r for r in records.read_carried(tmp_path)}
    assert carried["pixelcnn-0123abcd"]["dataset"] == "adni:AD_NC"
    assert carried["pixelcnn-against-1"]["against"] == {
        "run_id": "pixelcnn-0123abcd", "dataset": "oasis:oasis",
        "data": {"kind": "oasis", "fingerprint": "a" * 16, "name": "oasis"}}


def test_a_run_id_that_is_no_file_name_is_not_carried(tmp_path):
    said = []
    for bad in ("../escape", "sub/dir", ".hidden"):
        assert records.carry([record(bad)], tmp_path / "out", warn=said.append) == []
    assert len(said) == 3 and all("not a file name" in line for line in said)
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "out").exists()


def test_an_unreadable_copy_is_kept_unless_forced(tmp_path):
    path = tmp_path / records.CARRIED / "pixelcnn-0123abcd.json"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe not json")
    said = []
    assert records.carry([record()], tmp_path, warn=said.append) == [] and "kept" in said[0]
    assert records.carry([record()], tmp_path, force=True) == [path]
    assert records.read_carried(tmp_path)[0]["run_id"] == "pixelcnn-0123abcd"


def test_two_runs_filling_one_cell_are_named():
    one, other = record("pixelcnn-aaaa"), record("pixelcnn-bbbb")
    seed1 = record("pixelcnn-cccc", seed=1)
    (line,) = records.repeated_cells([one, other, seed1])
    assert "pixelcnn seed 0" in line and "pixelcnn-aaaa" in line and "pixelcnn-bbbb" in line
    assert records.repeated_cells([one, seed1]) == []


def test_migrate_moves_carried_records_of_an_older_definition_aside(tmp_path):
    from bench.migrate import migrate
    records.carry([record("pixelcnn-current"), record("pixelcnn-old", real_side="test images")],
                  tmp_path)
    done = migrate(tmp_path)
    assert done.moved == ["records/pixelcnn-old.json"]
    assert [r["run_id"] for r in records.read_carried(tmp_path)] == ["pixelcnn-current"]
    assert (tmp_path / "superseded" / "records" / "pixelcnn-old.json").is_file()
