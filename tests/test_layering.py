"""Layering: `priors` and `vqvae` are libraries; they import nothing from `bench` and not each
other, and `trainkit` (what both training loops share) imports none of the three.
Every import statement counts, also one inside a function, and so does a string given to
`importlib.import_module` or `__import__`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"priors": {"bench", "vqvae"}, "vqvae": {"bench", "priors"},
             "trainkit": {"bench", "priors", "vqvae"}}
OUTSIDE = "<outside the package>"  # what a relative import above the top level resolves to


def imported(tree: ast.AST, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `tree`, for a file in `package` (the dotted
    parts of its package, e.g. ('priors',)); relative imports are resolved against it."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            if node.level and not base:  # climbs out of the top-level package
                base = (OUTSIDE,)
            module = ".".join(base + ((node.module,) if node.module else ()))
            found += [(node.lineno, module or alias.name) for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                             "__import__")):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(package_dir: Path, forbidden: set[str]) -> list[str]:
    """'path:line imports module' for each import of a forbidden top-level package (or a
    relative import leaving the package) by a .py file under package_dir."""
    out = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent)
        package = rel.parent.parts
        for line, module in imported(ast.parse(path.read_text(), str(path)), package):
            if module.split(".")[0] in forbidden | {OUTSIDE}:
                out.append(f"{rel}:{line} imports {module}")
    return out


@pytest.mark.parametrize("library", sorted(FORBIDDEN))
def test_libraries_import_nothing_from_bench_or_each_other(library):
    assert list((ROOT / library).rglob("*.py")), f"no sources under {library}/"
    assert violations(ROOT / library, FORBIDDEN[library]) == []


@pytest.mark.parametrize("source", [
    "import bench",
    "from bench.run import run_benchmark",
    "import os, bench.metrics as m",
    "def load():\n    from bench import errors\n",  # a lazy import inside a function
    "class P:\n    def fit(self):\n        import vqvae.io\n",
    "import importlib\nimportlib.import_module('bench.scoring')\n",
    "from ... import bench\n",  # relative, out of the package
])
def test_the_check_fails_when_priors_imports_bench_or_vqvae(tmp_path, source):
    (tmp_path / "priors" / "sub").mkdir(parents=True)
    (tmp_path / "priors" / "sub" / "plugin.py").write_text(source)
    found = violations(tmp_path / "priors", FORBIDDEN["priors"])
    assert len(found) == 1 and found[0].startswith("priors/sub/plugin.py:"), found


@pytest.mark.parametrize("source", [
    "import torch\nfrom priors.base import Prior\n",
    "from . import base\nfrom .. import autoregressive\n",  # relative, inside priors
    "import benchmarks_elsewhere\n",  # a name that only starts like bench
])
def test_the_check_passes_imports_inside_the_library(tmp_path, source):
    (tmp_path / "priors" / "sub").mkdir(parents=True)
    (tmp_path / "priors" / "sub" / "plugin.py").write_text(source)
    assert violations(tmp_path / "priors", FORBIDDEN["priors"]) == []
