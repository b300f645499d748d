"""Outside priors without a network: a fake installed distribution (a .dist-info folder) that
declares entry points, with tests/plugins on sys.path. A fresh `priors.base.Registry()` loads
them (the process-wide one loaded its entry points long ago and never looks again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from priors.base import ENTRY_POINT_GROUP

PLUGINS = Path(__file__).parent / "plugins"
EXAMPLE = {"example-histogram": "bench_example_prior:HistogramPrior"}


def fake_install(root: Path, monkeypatch: pytest.MonkeyPatch, entry_points: dict[str, str],
                 dist: str = "bench_example_prior") -> Path:
    """Declare `entry_points` (name -> "module:Class") in a distribution under `root`, as pip
    would leave it; tests/plugins and `root` go on sys.path (undone by monkeypatch)."""
    folder = root / f"{dist}-0.1.0.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = {ref}\n" for name, ref in entry_points.items())
    (folder / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(root))
    return root
