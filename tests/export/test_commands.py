"""The export / serve command lines: argument and error handling (the work is tested elsewhere)."""

from __future__ import annotations

from typer.testing import CliRunner

from medfraud.cli import app


def test_export_needs_exactly_one_source():
    runner = CliRunner()
    neither = runner.invoke(app, ["export", "--name", "m"])
    assert neither.exit_code == 2 and "exactly one of" in neither.output
    both = runner.invoke(app, ["export", "--name", "m", "--run", "abc", "--experiment", "e"])
    assert both.exit_code == 2


def test_export_unknown_run_fails_with_reason(exported, tmp_path):
    result = CliRunner().invoke(app, ["export", "--name", "m", "--run", "f" * 32, "--uri", exported["uri"],
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "not found" in result.output
    assert not (tmp_path / "m").exists()


def test_export_rejects_unknown_calibration():
    result = CliRunner().invoke(app, ["export", "--name", "m", "--run", "x", "--calibration", "beta"])
    assert result.exit_code == 2 and "platt or isotonic" in result.output


def test_serve_missing_model_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nope"), "--port", "8765"])
    assert result.exit_code == 2 and "does not exist" in result.output
