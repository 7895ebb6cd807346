"""Generate a synthetic claims dataset from a synth preset (configs/synth/<preset>.yaml)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medfraud.commands import Backend, backend_option, ray_address_option


def command(
    preset: str = typer.Option("tiny", "--preset", help="preset name in configs/synth/ or a YAML path"),
    out: Path = typer.Option(..., "--out", help="destination dataset folder"),
    seed: int | None = typer.Option(None, "--seed", help="replace the preset's seed"),
    claims: int | None = typer.Option(None, "--claims", help="scale populations to about N claims"),
    set_: list[str] = typer.Option([], "--set", help="override, dotted.path=value (repeatable)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a non-empty --out"),
    backend: Backend = backend_option("shards as Ray tasks, same bytes"),
    ray_address: str = ray_address_option(),
) -> None:
    import data_synth
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        console.print(f"[red]error:[/red] {out} exists and is not empty; pass --overwrite to replace it",
                      highlight=False)
        raise typer.Exit(1)
    try:
        config = data_synth.load_config(preset, seed=seed, claims=claims, overrides=set_)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except ValueError as exc:
        console.print(f"error in --set / preset: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    with Progress(TextColumn("generating"), BarColumn(), TextColumn("{task.completed}/{task.total} shards"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("generate", total=None)
        path = data_synth.generate(config, out, overwrite=overwrite, backend=backend.value,
                                   ray_address=ray_address,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))
    from medfraud.dataset import Dataset

    dataset = Dataset(path)
    rows = dataset.manifest["row_counts"]
    Console().print(f"[green]wrote[/green] {path}: {rows.get('claims', 0):,} claims, "
                    f"{sum(rows.values()):,} rows, digest {dataset.digest[:12]}")
