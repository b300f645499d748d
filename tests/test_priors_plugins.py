"""Outside priors arrive through the `bench.priors` entry-point group, with no network: a fake
installed distribution (a .dist-info folder) is written into tmp_path and put on sys.path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from priors import CodeSet, NullProgress, PriorError, get_prior
from priors.base import ENTRY_POINT_GROUP, Registry
from tests.conftest_plugins import EXAMPLE, PLUGINS, fake_install


@pytest.fixture
def installed(tmp_path, monkeypatch) -> Path:
    """A distribution declaring the example plug-in and a broken one, as pip would leave it."""
    return fake_install(tmp_path, monkeypatch,
                        EXAMPLE | {"broken": "bench_missing_module:Nothing"})


def test_entry_point_plugin_is_registered_and_runs(installed):
    registry = Registry()  # a fresh one: the process-wide REGISTRY stays untouched
    registry.add("uniform", get_prior("uniform"))
    assert {"example-histogram", "uniform"} <= set(registry.names())
    cls = registry.get("example-histogram")
    assert cls.name == "example-histogram"
    prior = cls(cls.Config(), num_codes=5, grid=(3, 3))
    codes = torch.randint(0, 5, (6, 3, 3), generator=torch.Generator().manual_seed(0))
    prior.fit(CodeSet(codes, 5), CodeSet(codes, 5), seed=0, progress=NullProgress())
    sample = prior.sample(4, generator=torch.Generator().manual_seed(1))
    assert sample.shape == (4, 3, 3) and int(sample.max()) < 5
    assert torch.isfinite(prior.log_prob(codes)).all()


def test_a_broken_plugin_does_not_break_the_others(installed):
    registry = Registry()
    registry.add("uniform", get_prior("uniform"))
    assert "uniform" in registry and "example-histogram" in registry
    assert "broken" not in registry.names()
    assert "ModuleNotFoundError" in registry.load_errors["broken"]
    with pytest.raises(PriorError, match="'broken' failed to load from its entry point"):
        registry.get("broken")


def test_a_plugin_cannot_take_a_builtin_name(installed, tmp_path):
    (tmp_path / "bench_example_prior-0.1.0.dist-info" / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nuniform = bench_example_prior:HistogramPrior\n")
    registry = Registry()
    registry.add("uniform", get_prior("uniform"))
    assert registry.get("uniform") is get_prior("uniform")  # the built-in keeps its name
    assert "name taken by priors.uniform.UniformPrior" in registry.load_errors["uniform"]


def test_the_documented_example_is_the_tested_plugin():
    doc = (Path(__file__).parents[1] / "docs" / "writing-a-prior.md").read_text()
    source = (PLUGINS / "bench_example_prior" / "__init__.py").read_text()
    assert f"```python\n{source}```" in doc
    assert len(source.splitlines()) <= 40
