"""Score a Parquet or CSV batch of claim lines with an exported model; bad rows go to <output>.rejects.csv."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medfraud.commands import Backend, backend_option, ray_address_option


def command(
    model: str = typer.Option(..., "--model", help="model folder (models/NAME) or MLflow URI "
                              "(models:/NAME@champion)"),
    input: Path = typer.Option(..., "--input", help="Parquet or CSV file: one row per claim line, "
                               "claim columns repeated (see docs/export.md)"),
    output: Path = typer.Option(..., "--output", help="destination .parquet or .csv"),
    chunk_size: int = typer.Option(200_000, "--chunk-size", min=1, help="rows per chunk"),
    max_bad_share: float = typer.Option(0.01, "--max-bad-share", min=0.0, max=1.0,
                                        help="fail (exit 1, no output) above this share of bad rows"),
    backend: Backend = backend_option("chunks scored by Ray tasks, same output"),
    ray_address: str = ray_address_option(),
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medfraud.export.inputs import InputError
    from medfraud.export.model_io import load_pipeline
    from medfraud.serve.batch import TooManyBadRows, score_file, total_rows

    err = Console(stderr=True)
    try:
        pipeline, info = load_pipeline(model)
        total = total_rows(input) if input.is_file() else None
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    columns = [TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("score", total=total)
        try:
            report = score_file(pipeline, input, output, chunk_size=chunk_size,
                                max_bad_share=max_bad_share, backend=backend.value,
                                ray_address=ray_address,
                                progress=lambda done, _total: bar.update(task, completed=done))
        except InputError as exc:
            err.print(f"[red]error:[/red] {input}: {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        except TooManyBadRows as exc:
            err.print(f"[red]FAILED[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except (FileNotFoundError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
    rate = report.claims / report.seconds if report.seconds else float("nan")
    msg = (f"[green]OK[/green] {report.claims:,} claims scored from {report.rows:,} rows in "
           f"{report.seconds:.1f}s ({rate:,.0f} claims/s) with {info.name} -> {output}")
    if report.bad_rows:
        msg += f"; {report.bad_rows:,} bad row(s) listed in {report.rejects}"
    err.print(msg, highlight=False)
