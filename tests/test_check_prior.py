"""`bench check-prior`: one line per rule, exit 1 on a failure. Issue 12's acceptance cases
through the CLI: for each broken plug-in, check-prior fails with a line naming prior, method and
rule, and `bench run` stops before the fit with the same line. The example plug-in installed
through pip into a fresh venv passes it there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import priors.base
from bench.cli import app
from priors import contract
from priors.base import Registry
from tests.conftest_plugins import EXAMPLE, PLUGINS, fake_install
from tests.test_cli import assert_user_error

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, list(args))


def test_check_prior_prints_one_line_per_rule():
    result = bench("check-prior", "pixelcnn")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [ln.split()[1] for ln in lines] == [r.name for r in contract.RULES]
    assert all(ln.startswith(("pass  ", "skip  ")) and "prior 'pixelcnn': " in ln for ln in lines)
    assert "pixelcnn: 17 pass, 1 skip, 0 FAIL in" in result.stderr


@pytest.mark.parametrize("args,needles", [
    ((), ["give one prior NAME or --all"]),
    (("pixelcnn", "--all"), ["give one prior NAME or --all"]),
    (("pixelcn",), ["unknown prior 'pixelcn'", "did you mean 'pixelcnn'"]),
])
def test_check_prior_usage_errors(args, needles):
    assert_user_error(bench("check-prior", *args), *needles)


@pytest.fixture
def registry(broken_plugins, tmp_path, monkeypatch) -> Registry:
    """The process-wide registry replaced by a fresh one that loads the example plug-in and the
    broken ones (and nothing else, so --all stays quick)."""
    fake_install(tmp_path, monkeypatch, EXAMPLE | broken_plugins.ENTRY_POINTS)
    fresh = Registry()
    monkeypatch.setattr(priors.base, "REGISTRY", fresh)
    return fresh


def test_check_prior_all_checks_plugins_and_failed_entry_points(registry, broken_plugins):
    result = bench("check-prior", "--all")
    assert result.exit_code == 1, result.output
    checked = {ln.split(":")[0] for ln in result.stderr.splitlines() if " pass, " in ln}
    assert checked == {"example-histogram", *broken_plugins.ENTRY_POINTS}
    assert "example-histogram: 14 pass, 4 skip, 0 FAIL" in result.stderr
    assert "broken-missing: 0 pass, 0 skip, 1 FAIL" in result.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """One tiny results folder: the first run builds the backbone and export the others reuse."""
    return tmp_path_factory.mktemp("results")


def numbers_blurred(text: str) -> str:
    """check-prior runs on K = 12, 4x4 grids, bench run on the tiny preset's: same words."""
    return re.sub(r"-?\d+(\.\d+)?", "#", text)


@pytest.mark.parametrize("name,rule,method", [
    ("broken-positive", "before-fit", "log_prob returned positive values"),
    ("broken-range", "before-fit", "sample returned codes in"),
    ("broken-grid-log-prob", "before-fit", "log_prob returned shape"),
    ("broken-config", "config", "Config is a type that is not a dataclass"),
    ("broken-missing", "entry-point", "entry point failed to load"),
])
def test_check_prior_and_bench_run_stop_a_broken_plugin_alike(registry, results, monkeypatch,
                                                              name, rule, method):
    checked = bench("check-prior", name)
    assert checked.exit_code == 1, checked.output
    fails = {ln.split()[1]: ln for ln in checked.stdout.splitlines() if ln.startswith("FAIL")}
    assert f"prior '{name}': {method}" in fails[rule]  # the prior, the method, the rule
    if name in registry:  # prove that the fit is never reached
        monkeypatch.setattr(registry.get(name), "fit", lambda *a, **k: pytest.fail("fit ran"))
    run = bench("run", "--prior", name, "--preset", "tiny", "--out", str(results))
    assert run.exit_code == 2, run.output
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in run.output, run.output
    if rule == "before-fit":  # the same line, from the same check
        message = fails[rule].split(None, 2)[2]
        assert numbers_blurred(errors[0]) == numbers_blurred(
            f"error: {message} (rule before-fit; `bench check-prior {name}` checks every rule)")
    else:  # the registry refused it: both lines carry its load error
        assert registry.load_errors[name] in fails["entry-point"]
        assert f"prior '{name}' failed to load from its entry point: " \
               f"{registry.load_errors[name]}" in errors[0]
    assert not list(results.glob(f"runs/{name}-*"))  # nothing reached a record


@pytest.mark.slow
def test_the_example_plugin_installed_by_pip_passes_check_prior(tmp_path):
    """A wheel of tests/plugins built by pip, installed by pip into a fresh venv, checked by
    `bench check-prior` running in that venv. The venv sees this environment's packages (torch,
    vq-prior-bench) through a .pth that adds its site-packages (`--system-site-packages` would
    give the base interpreter's, which need not hold torch); the plug-in itself is only in the
    venv, and the command runs outside the checkout."""
    source = tmp_path / "src"
    shutil.copytree(PLUGINS, source, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                   "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
         str(tmp_path / "wheels"), str(source)])
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]))
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (site / "parent_env.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n"
                                                 for p in ours))
    wheel = next((tmp_path / "wheels").glob("bench_example_prior-*.whl"))
    run([*pip, "--python", python, "install", "--no-deps", "--no-index", str(wheel)])
    checked = subprocess.run(
        [python, "-c", "import sys; from bench.cli import app; sys.argv[0] = 'bench'; app()",
         "check-prior", "example-histogram"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "resolves to bench_example_prior.HistogramPrior" in checked.stdout
    assert "example-histogram: 14 pass, 4 skip, 0 FAIL" in checked.stderr
    where = run([python, "-c", "import bench_example_prior; print(bench_example_prior.__file__)"],
                cwd=tmp_path)
    assert where.startswith(str(site))  # the installed copy, not tests/plugins


def run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout.strip()
