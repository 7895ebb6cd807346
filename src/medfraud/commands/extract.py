"""Write a dataset's claims (joined with their lines) as a scoring input file."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import typer
from rich.console import Console


def command(
    dataset: Path = typer.Argument(..., help="dataset folder (the data contract)"),
    out: Path = typer.Option(..., "--out", help="output file: .parquet or .csv"),
    start: str | None = typer.Option(None, "--start", help="first service date, YYYY-MM-DD"),
    end: str | None = typer.Option(None, "--end", help="last service date, YYYY-MM-DD"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="at most this many claims (latest first)"),
) -> None:
    import polars as pl

    from medfraud.dataset import Dataset
    from medfraud.export.inputs import CLAIM_COLUMNS, LINE_COLUMNS

    console = Console(stderr=True)
    if out.suffix.lower() not in (".parquet", ".csv"):
        console.print(f"--out must end in .parquet or .csv, got {out.name!r}")
        raise typer.Exit(2)
    try:
        first = date.fromisoformat(start) if start else None
        last = date.fromisoformat(end) if end else None
    except ValueError as exc:
        console.print(f"--start/--end: {exc}")
        raise typer.Exit(2) from exc
    try:
        ds = Dataset(dataset)
    except FileNotFoundError as exc:
        console.print(str(exc))
        raise typer.Exit(1) from exc

    claims = ds.scan("claims").select(list(CLAIM_COLUMNS))
    if first:
        claims = claims.filter(pl.col("service_date") >= first)
    if last:
        claims = claims.filter(pl.col("service_date") <= last)
    claims = claims.sort(["service_date", "claim_id"])
    if limit:
        claims = claims.tail(limit)
    rows = (claims.join(ds.scan("claim_lines").select("claim_id", *LINE_COLUMNS), on="claim_id",
                        how="inner", maintain_order="left")
            .collect())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".parquet":
        rows.write_parquet(tmp)
    else:
        rows.write_csv(tmp)
    os.replace(tmp, out)
    Console().print(f"wrote {rows['claim_id'].n_unique():,} claims ({rows.height:,} lines) to {out}")
