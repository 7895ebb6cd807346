import importlib.util

from typer.testing import CliRunner

from medfraud.cli import COMMANDS, app


def test_every_listed_command_exists_and_has_help():
    for name in COMMANDS:
        assert importlib.util.find_spec(f"medfraud.commands.{name}") is not None, name
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
