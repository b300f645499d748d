"""Suite-wide fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run tiny tensor ops; on a shared 2-core machine one intra-op thread runs them
    many times faster than two (measured up to ~30x under load), and results do not change."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def broken_plugins(monkeypatch):
    """tests/plugins on sys.path; the module of plug-ins that each break the contract one way."""
    from tests.conftest_plugins import PLUGINS

    monkeypatch.syspath_prepend(str(PLUGINS))
    import bench_broken_priors

    return bench_broken_priors
