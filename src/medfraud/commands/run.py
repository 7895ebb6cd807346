"""Run an experiment YAML: generate/validate data, fit detectors, evaluate, track in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from medfraud.commands import Backend, backend_option, ray_address_option


def synth_generator(dataset: Any, seed: int, out: Path) -> Path:
    """Generate a missing preset dataset with ``data_synth`` (imported lazily, CLI only).

    Parameters
    ----------
    dataset : the experiment's ``dataset`` block (preset, synth_overrides, claims, camouflage).
    seed : generator seed (the experiment seed).
    out : folder to write; created atomically by the generator.
    """
    import data_synth

    config = data_synth.load_config(dataset.preset, seed=seed, claims=dataset.claims,
                                    overrides=dataset.overrides_list())
    return data_synth.generate(config, out)


def _fmt(value: Any) -> str:
    if value is None or value != value:  # NaN: no positive of that typology on the test side
        return "–"
    return f"{value:.3f}"


def _header(column: str) -> str:
    fixed = {"auprc": "AUPRC", "auroc": "AUROC", "rec_at_k": "Rec@K", "prevalence": "prev."}
    if column in fixed:
        return fixed[column]
    return column.replace("recall_at_", "Rec@").replace("pct", "%")


def print_metrics(metrics: Any, console: Console) -> None:
    """Rich table: detector × level × typology -> AUPRC, AUROC, Rec@K, recall at each budget.

    Rows whose typology has no positive on the test side (NaN AUPRC) are left out.
    """
    import polars as pl
    from rich.markup import escape
    from rich.table import Table

    shown = [c for c in ("auprc", "auroc", "rec_at_k") if c in metrics.columns]
    shown += [c for c in metrics.columns if c.startswith("recall_at_")]
    shown += ["prevalence"] if "prevalence" in metrics.columns else []
    table = Table(title="test metrics (typologies without test positives omitted)")
    keys = (["point"] if (metrics["point"] != "").any() else []) + ["detector", "level", "typology"]
    for key in keys:
        # One line per row on narrow terminals: long names end in an ellipsis.
        table.add_column(key, no_wrap=True, overflow="ellipsis",
                         max_width=16 if key == "typology" else None)
    for column in shown:
        table.add_column(_header(column), justify="right", no_wrap=True, min_width=5)
    ordered = metrics.filter(pl.col("auprc").is_not_nan()) if "auprc" in metrics.columns else metrics
    for row in ordered.iter_rows(named=True):
        table.add_row(*[escape(str(row[k])) for k in keys], *[_fmt(row[c]) for c in shown])
    console.print(table)


def command(
    experiment: Path = typer.Argument(..., help="experiment YAML (e.g. experiments/quickstart.yaml)"),
    overrides: list[str] = typer.Option([], "--set", help="dotted override key=value (repeatable), "
                                        "e.g. --set dataset.preset=tiny"),
    backend: Backend = backend_option("a sweep's points as Ray tasks"),
    ray_address: str = ray_address_option(),
) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from medfraud.config import ConfigError, load_experiment
    from medfraud.experiment import run_experiment
    from medfraud.schema import DataError

    err = Console(stderr=True)
    try:
        config = load_experiment(experiment, overrides)
    except ConfigError as exc:
        err.print("[red]config error[/red]", escape(str(exc)), highlight=False)
        raise typer.Exit(2) from None

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task(f"{config.name}: starting", total=None)

        def report(message: str, done: int, total: int) -> None:
            progress.update(task, description=f"{config.name}: {message}", completed=done, total=total)

        try:
            result = run_experiment(config, progress=report, generate=synth_generator,
                                    backend=backend.value, ray_address=ray_address)
        except (DataError, FileNotFoundError) as exc:
            # Bad or missing data is the user's to fix: say what and where, no traceback.
            progress.stop()
            err.print("[red]data error[/red]", escape(str(exc)), highlight=False)
            raise typer.Exit(1) from None
    console = Console()
    print_metrics(result.metrics, console)
    console.print(f"MLflow parent run [bold]{result.parent_run_id}[/bold] in experiment "
                  f"{config.experiment_name!r} at {config.tracking.resolved_uri()}; "
                  "compare with `medfraud compare`.")
