"""One-line errors for the project's own error types only: an internal bug keeps its traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from bench import cli
from bench.cli_common import EXIT_USER_ERROR, option_errors, user_errors
from bench.errors import ArtefactError, BenchError, DataError
from priors import PriorError
from vqvae import CheckpointError, VQVAEConfig


@pytest.mark.parametrize("error", [BenchError, DataError, ArtefactError, PriorError,
                                   CheckpointError])
def test_project_errors_become_one_line(error, capsys):
    @user_errors
    def command() -> None:
        raise error("bad value\n  over two lines")

    with pytest.raises(typer.Exit) as exit_info:
        command()
    assert exit_info.value.exit_code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: bad value over two lines\n"


@pytest.mark.parametrize("error", [ValueError, KeyError, FileNotFoundError, RuntimeError])
def test_other_errors_are_not_swallowed(error):
    @user_errors
    def command() -> None:
        raise error("an internal bug")

    with pytest.raises(error, match="an internal bug"):
        command()


def test_option_errors_turn_config_validation_into_a_user_error():
    with pytest.raises(BenchError, match="num_codes must be >= 2, got 1"):
        with option_errors():
            VQVAEConfig(num_codes=1)


def test_an_internal_value_error_reaches_the_cli_with_its_traceback(monkeypatch, tmp_path):
    def broken(cfg, seeds):
        raise ValueError("an internal bug")

    monkeypatch.setattr(cli, "run_seeds", broken)
    result = CliRunner().invoke(cli.app, ["run", "--out", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error:" not in result.stderr
