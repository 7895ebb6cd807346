"""Serve an exported model over REST (FastAPI + uvicorn): /health, /version, /score."""

from __future__ import annotations

import os

import typer
from rich.console import Console


def command(
    model: str = typer.Option(..., "--model", help="model folder (models/NAME) or MLflow URI "
                              "(models:/NAME@champion)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to bind (0.0.0.0: all)"),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1,
                                       help="reject larger request bodies with 413"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
    workers: int = typer.Option(1, "--workers", min=1, max=64,
                                help="worker processes, each with its own copy of the model"),
) -> None:
    # One polars (and OpenMP) thread per worker unless the caller says otherwise: a REST
    # batch of a few dozen claims gains nothing from a thread pool (measured on 2 cores:
    # 2 threads cost 25 % more CPU per 16-claim batch for the same time, and p99 rose by
    # 2-5 ms under 16 clients).  Set before polars is first imported (it reads them once);
    # the workers of a multi-process server inherit them.
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from medfraud.export.model_io import load_pipeline
    from medfraud.serve.app import create_app

    err = Console(stderr=True)
    try:
        pipeline, info = load_pipeline(model)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"serving {info.name} (version {info.version or '-'}, data {info.data_digest[:12]}) "
              f"on http://{host}:{port} with {workers} worker(s)", highlight=False)
    if workers == 1:
        app = create_app(pipeline, info, max_body_bytes=max_body_bytes)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    # Small scoring calls are dominated by fixed per-query costs that extra threads barely
    # shorten; on a machine with more cores, processes each serve their own requests.  The
    # workers are fresh interpreters that read these variables.
    from medfraud.serve.app import ENV_MAX_BODY_BYTES, ENV_MODEL

    del pipeline
    os.environ[ENV_MODEL] = model
    os.environ[ENV_MAX_BODY_BYTES] = str(max_body_bytes)
    uvicorn.run("medfraud.serve.app:app_from_environment", factory=True, workers=workers,
                host=host, port=port, log_level=log_level, access_log=False)
