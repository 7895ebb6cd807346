"""Export a tracked run as an MLflow pyfunc scoring model and register it as NAME@champion."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def command(
    name: str = typer.Option(..., "--name", help="registered model name"),
    run: str | None = typer.Option(None, "--run", help="MLflow run id (parent or detector run)"),
    experiment: str | None = typer.Option(None, "--experiment",
                                          help="experiment name: export its latest finished run"),
    out: Path | None = typer.Option(None, "--out", help="model folder (default models/NAME)"),
    uri: str | None = typer.Option(None, "--uri", help="tracking URI (default $MLFLOW_TRACKING_URI "
                                   "or sqlite:///mlflow.db)"),
    detectors: list[str] = typer.Option([], "--detector", help="detector of the run to include "
                                        "(repeatable; default all but ensembles)"),
    calibration: str = typer.Option("platt", "--calibration", help="platt or isotonic"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing model folder"),
    no_register: bool = typer.Option(False, "--no-register", help="write the folder only"),
) -> None:
    from medfraud.config import ConfigError
    from medfraud.export.from_run import ExportError, export_run

    err = Console(stderr=True)
    if (run is None) == (experiment is None):
        err.print("[red]error:[/red] give exactly one of --run RUN_ID or --experiment NAME")
        raise typer.Exit(2)
    if calibration not in ("platt", "isotonic"):
        err.print(f"[red]error:[/red] --calibration must be platt or isotonic, got {calibration!r}")
        raise typer.Exit(2)
    with err.status("exporting (features, scores, calibration)..."):
        try:
            result = export_run(name=name, run_id=run, experiment=experiment, out=out, uri=uri,
                                detectors=list(detectors) or None, calibration_method=calibration,
                                overwrite=overwrite, register=not no_register)
        except (ExportError, ConfigError, FileExistsError, FileNotFoundError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from None
    holdout = result.card["metrics"]["holdout"]
    where = f"models:/{name}@champion (version {result.version})" if result.version else "(not registered)"
    err.print(f"[green]OK[/green] {result.model_dir} from run {result.run_id} -> {where}; "
              f"held-out AUPRC {holdout.get('auprc', float('nan')):.3f} on {holdout.get('claims')} claims",
              highlight=False)
