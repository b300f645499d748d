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
    assert records.source_commit.__wrapped__() is None
