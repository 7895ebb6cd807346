"""Check a dataset folder against the data contract; exit 1 listing every problem."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def command(dataset: Path = typer.Argument(..., help="dataset folder")) -> None:
    from medfraud.schema import validate

    console = Console(stderr=True)
    report = validate(dataset)
    if report.ok:
        total = sum(report.row_counts.values())
        Console().print(f"[green]OK[/green] {dataset}: {len(report.row_counts)} tables, {total:,} rows")
        return
    console.print(f"[red]INVALID[/red] {dataset}: {len(report.problems)} problem(s)")
    for problem in report.problems:
        console.print(f"  - {problem}", markup=False, highlight=False)
    raise typer.Exit(1)
