"""The ``medfraud`` command line: thin wrappers over library functions.

Each command lives in ``medfraud.commands.<name>`` as a function ``command`` with typer
annotations; heavy imports happen inside the function so ``medfraud --help`` is fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="medfraud: find fraud in medical-insurance claims.")


@app.callback()
def _root() -> None:
    """medfraud: find fraud in medical-insurance claims."""  # keeps `medfraud <command>` a group


# Command name -> module under medfraud.commands holding ``command``.
COMMANDS = ["generate", "validate", "rules", "run", "compare", "export", "score", "serve", "extract"]

for _name in COMMANDS:
    _module = importlib.import_module(f"medfraud.commands.{_name}")
    app.command(_name, help=_module.__doc__)(_module.command)
