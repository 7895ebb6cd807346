"""Compare tracked runs side by side (one column per detector run, best run per metric key)."""

from __future__ import annotations

import typer
from rich.console import Console


def command(
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment name "
                                          "(default: every experiment in the store)"),
    metric: str | None = typer.Option(None, "--metric", help="metric key or name, e.g. auprc "
                                      "(default) or test.doctor.collusion_ring.auprc"),
    uri: str | None = typer.Option(None, "--uri", help="tracking URI (default $MLFLOW_TRACKING_URI "
                                   "or sqlite:///mlflow.db)"),
    all_runs: bool = typer.Option(False, "--all", help="every run, not only each experiment's latest"),
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from medfraud.tracking import compare_runs, resolve_uri

    err = Console(stderr=True)
    try:
        table = compare_runs(experiment, metric, uri=uri, latest_only=not all_runs)
    except KeyError as exc:
        err.print(f"[red]{escape(exc.args[0])}[/red]", highlight=False)
        raise typer.Exit(2) from None
    if table.height == 0:
        err.print(f"no detector runs with metric {metric or 'auprc'!r} in {resolve_uri(uri)}")
        raise typer.Exit(1)
    swept = "point" in table.columns
    runs = [c for c in table.columns if c not in ("key", "point", "best", "best_value")]
    out = Table(title=f"{metric or 'auprc'} by run (bold: best per key"
                      f"{' and sweep point' if swept else ''})")
    out.add_column("key")
    if swept:
        out.add_column("point")
    for run in runs:
        out.add_column(escape(run), justify="right")  # a run name's brackets are not markup
    out.add_column("best")
    for row in table.iter_rows(named=True):
        cells = []
        for run in runs:
            value = row[run]
            text = "–" if value != value else f"{value:.3f}"
            cells.append(f"[bold green]{text}[/bold green]" if run == row["best"] else text)
        point = [escape(row["point"])] if swept else []
        out.add_row(row["key"], *point, *cells, escape(row["best"] or "–"))
    Console().print(out)
