"""The commands of the ``medfraud`` CLI (one module each) and the options they share."""

from __future__ import annotations

from enum import Enum

import typer

from medfraud.distributed import BACKENDS

# Where a command's work runs (medfraud.distributed.BACKENDS); typer checks the choice.
Backend = Enum("Backend", {name: name for name in BACKENDS}, type=str)


def backend_option(ray_help: str):
    """``--backend local|ray``; ``ray_help`` says what runs as Ray tasks."""
    return typer.Option(Backend.local, "--backend",
                        help=f"local: one process; ray: {ray_help} (needs the ray extra)")


def ray_address_option():
    """``--ray-address``: the Ray cluster to join."""
    return typer.Option(None, "--ray-address", help="with --backend ray: the cluster to join "
                        "(e.g. auto); default: a local one on this machine")
