"""Run the audit-rule catalogue over a dataset: summary table per rule, hits to --out."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console


def _date(value: str | None, option: str):
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"{option} must be a date YYYY-MM-DD, got {value!r}") from None


def command(
    dataset: Path = typer.Argument(..., help="dataset folder"),
    out: Path | None = typer.Option(None, "--out", help="write every hit here (.parquet or .csv)"),
    catalogue: Path | None = typer.Option(None, "--catalogue",
                                          help="rule catalogue YAML (default configs/rules/default.yaml)"),
    start: str | None = typer.Option(None, "--start", help="first service date judged (YYYY-MM-DD)"),
    end: str | None = typer.Option(None, "--end", help="last service date judged (YYYY-MM-DD)"),
) -> None:
    import polars as pl
    from rich.table import Table

    from medfraud.dataset import Dataset
    from medfraud.rules import CatalogueError, evaluate_rules, load_catalogue, summarise
    from medfraud.rules.engine import write_hits
    from medfraud.schema import validate

    err = Console(stderr=True)
    if out is not None and out.suffix.lower() not in (".parquet", ".csv"):
        err.print(f"[red]--out must end in .parquet or .csv, got {out.name!r}[/red]")
        raise typer.Exit(2)
    start_date, end_date = _date(start, "--start"), _date(end, "--end")
    report = validate(dataset)
    if not report.ok:
        err.print(f"[red]INVALID[/red] {dataset}: {len(report.problems)} problem(s)")
        for problem in report.problems:
            err.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(1)
    try:
        rules = load_catalogue(catalogue)
    except CatalogueError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    window = None
    if start_date is not None or end_date is not None:
        data = Dataset(dataset).scan("claims").select(
            pl.col("service_date").min().alias("lo"), pl.col("service_date").max().alias("hi")
        ).collect()
        window = (start_date or data["lo"].item(), end_date or data["hi"].item())
    hits = evaluate_rules(Dataset(dataset), rules, window=window)
    summary = summarise(hits)

    table = Table(title=f"audit rules on {dataset} ({hits.height:,} hits)")
    for column, justify in [("rule", "left"), ("kind", "left"), ("reason code", "left"),
                            ("level", "left"), ("sev", "right"), ("hits", "right"),
                            ("distinct ids", "right"), ("amount at stake (¥)", "right")]:
        table.add_column(column, justify=justify)
    counted = {row["rule_id"]: row for row in summary.iter_rows(named=True)}
    for rule in rules.enabled:  # rules without hits are listed too: zero is information
        row = counted.get(rule.id, {"hits": 0, "distinct_ids": 0, "amount_at_stake": 0.0})
        table.add_row(rule.id, rule.kind, rule.reason_code, rule.level, str(rule.severity),
                      f"{row['hits']:,}", f"{row['distinct_ids']:,}",
                      f"{row['amount_at_stake']:,.2f}")
    Console().print(table)
    if out is not None:
        write_hits(hits, out)
        Console().print(f"wrote {hits.height:,} hits to {out}")
