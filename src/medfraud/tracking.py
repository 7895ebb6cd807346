"""MLflow tracking: the only module (outside ``medfraud.export``) that imports ``mlflow``.

Layout of an experiment in MLflow (see ``docs/experiments.md``):

* one **parent run** per ``medfraud run`` (run name = experiment name), holding the
  resolved config (params, ``config/experiment.yaml``), tags (git commit, seed, contract
  version, dataset digest) and the dataset inputs;
* one **child run** per detector and sweep point (``mlflow.parentRunId`` = the parent),
  tagged ``medfraud.detector``, ``medfraud.family``, ``medfraud.level`` and, in a sweep,
  ``medfraud.sweep_point`` plus one ``sweep.<dotted key>`` param per swept key.  Children of
  different points share metric keys, so one MLflow chart compares them directly.

Metric keys are ``<split>.<level>.<typology>.<metric>`` (``test.doctor.collusion_ring.auprc``);
characters MLflow refuses in names are replaced by ``_`` (see :func:`metric_key`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import subprocess
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medfraud.config import DEFAULT_TRACKING_URI
from medfraud.schema import CONTRACT_VERSION

TAG_KIND = "medfraud.kind"          # "experiment" (parent) or "detector" (child)
TAG_DETECTOR = "medfraud.detector"
TAG_FAMILY = "medfraud.family"
TAG_LEVEL = "medfraud.level"
TAG_POINT = "medfraud.sweep_point"
TAG_ERROR = "error"
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def resolve_uri(uri: str | None = None) -> str:
    """Explicit ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (cwd)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def absolute_uri(uri: str | None = None) -> str:
    """:func:`resolve_uri` with a relative sqlite database path made absolute (for worker
    processes, whose working folder may differ)."""
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_absolute():
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def metric_key(*parts: str) -> str:
    """Join parts with ``.`` and replace characters MLflow forbids (``@``, ``%``) with ``_``."""
    return _BAD_NAME_CHARS.sub("_", ".".join(parts))


def git_commit(folder: str | Path | None = None) -> str:
    """HEAD commit of the git repository holding ``folder`` (cwd), or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder or os.getcwd(),
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def _artifact_root(uri: str) -> str | None:
    # For a sqlite file store keep artifacts beside the database, not in ./mlruns of
    # whatever folder the process happens to run from.
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Id of the MLflow experiment ``name`` in the store at ``uri``, created if missing."""
    uri = resolve_uri(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_root(uri))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return {"__bytes_b64__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


class TrackedRun:
    """An active MLflow run; thin, typed logging helpers used by the experiment runner."""

    def __init__(self, run: mlflow.ActiveRun):
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = {k: (v if isinstance(v, str) else json.dumps(v, default=str))[:6000]
                 for k, v in params.items()}
        keys = list(items)
        for start in range(0, len(keys), 100):  # MLflow batches at most 100 params
            mlflow.log_params({k: items[k] for k in keys[start:start + 100]})

    def log_metrics(self, metrics: Mapping[str, float], prefix: str = "") -> None:
        """Log metrics under ``prefix.key`` (sanitised); NaN is kept (no positives)."""
        clean = {metric_key(*filter(None, [prefix, k])): float(v) for k, v in metrics.items()}
        keys = list(clean)
        for start in range(0, len(keys), 1000):
            mlflow.log_metrics({k: clean[k] for k in keys[start:start + 1000]})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_json(self, data: Any, artifact_file: str) -> None:
        mlflow.log_text(json.dumps(data, default=_jsonable, indent=1, ensure_ascii=False),
                        artifact_file)

    def log_frame(self, frame: pl.DataFrame, artifact_file: str) -> None:
        """Log a table as Parquet (typed) and, for human review, CSV (lists joined by ``|``)."""
        stem = artifact_file.rsplit(".", 1)[0]
        folder, name = (stem.rsplit("/", 1) if "/" in stem else (None, stem))
        flat = frame.with_columns(
            pl.col(c).list.join("|") for c, t in frame.schema.items() if t == pl.List(pl.String))
        with tempfile.TemporaryDirectory() as tmp:
            frame.write_parquet(Path(tmp) / f"{name}.parquet")
            flat.write_csv(Path(tmp) / f"{name}.csv")
            mlflow.log_artifacts(tmp, folder)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib Figure as an image artifact (``.png``)."""
        mlflow.log_figure(figure, artifact_file)

    def log_dataset(self, frame: pl.DataFrame, *, name: str, source: str, digest: str,
                    context: str) -> None:
        """Record a dataset input (``mlflow.data``) whose digest is the manifest digest."""
        with warnings.catch_warnings():
            # A local path matches two equivalent artifact-source classes; MLflow warns and
            # picks one, which is all we need.
            warnings.filterwarnings("ignore", message="The specified dataset source")
            dataset = mlflow.data.from_polars(frame, source=source, name=name, digest=digest[:36])
        try:
            mlflow.log_input(dataset, context=context)
        except MlflowException as exc:
            # Two processes logging one dataset into an experiment at once (sweep points on
            # Ray, two runs side by side) race in MLflow's get-or-create of its row: the
            # loser's insert breaks the store's unique key.  The row exists now, so logging
            # again only links it to this run.
            if "unique constraint" not in str(exc).lower():
                raise
            mlflow.log_input(dataset, context=context)

    def log_state(self, detector: str, state: Any) -> None:
        """Log a detector's ``to_state()`` under ``state/<detector>/``.

        A mapping is written as ``state.json`` except values that are text blobs (model
        files such as LightGBM's) or bytes, which become their own files
        (``<key>.txt``/``<key>.bin``) and are referenced from the JSON as
        ``{"__file__": name}``.  Anything else must be JSON-serialisable.
        """
        if not isinstance(state, Mapping):
            self.log_json(state, f"state/{detector}/state.json")
            return
        with tempfile.TemporaryDirectory() as tmp:
            manifest: dict[str, Any] = {}
            for key, value in state.items():
                if isinstance(value, bytes):
                    (Path(tmp) / f"{key}.bin").write_bytes(value)
                    manifest[key] = {"__file__": f"{key}.bin"}
                elif isinstance(value, str) and len(value) > 4096:
                    (Path(tmp) / f"{key}.txt").write_text(value, encoding="utf-8")
                    manifest[key] = {"__file__": f"{key}.txt"}
                else:
                    manifest[key] = value
            (Path(tmp) / "state.json").write_text(
                json.dumps(manifest, default=_jsonable, indent=1, ensure_ascii=False), encoding="utf-8")
            mlflow.log_artifacts(tmp, f"state/{detector}")


@contextlib.contextmanager
def start_run(name: str, *, experiment: str | None = None, uri: str | None = None,
              nested: bool = False, parent: str | None = None,
              tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
    """Open a run; on an exception tag it with the error, end it FAILED and re-raise.

    Parameters
    ----------
    name : run name shown in the MLflow UI.
    experiment : experiment name (required for a top-level run; children inherit it).
    uri : tracking URI (see :func:`resolve_uri`).
    nested : True for a child of the currently active run.
    parent : run id of the parent (implies ``nested``): for a child opened in another
        process than its parent (a Ray worker), where the parent is not the active run.
        The parent must still be running; when a run is active, it must be that one.
    tags : tags set at creation.
    """
    active = mlflow.active_run()
    if parent is not None and (active is None or active.info.run_id != parent):
        # The parent runs in another process: read its experiment from the store.
        experiment_id = MlflowClient().get_run(parent).info.experiment_id
    elif not nested and parent is None:
        if experiment is None:
            raise ValueError("a top-level run needs an experiment name")
        experiment_id = ensure_experiment(experiment, uri)
    else:
        if active is None:
            raise RuntimeError(f"nested run {name!r} needs an active parent run")
        experiment_id = active.info.experiment_id
    run = mlflow.start_run(run_name=name, experiment_id=experiment_id,
                           nested=nested or parent is not None, parent_run_id=parent,
                           tags={k: str(v) for k, v in (tags or {}).items()})
    try:
        yield TrackedRun(run)
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        mlflow.set_tag(TAG_ERROR, message[:5000])
        mlflow.log_text("".join(traceback.format_exception(exc)), "error.txt")
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FINISHED))


def standard_tags(seed: int, dataset_digest: str | None = None) -> dict[str, str]:
    """Tags every medfraud run carries: git commit, seed, contract and package versions."""
    from medfraud import __version__

    commit = git_commit()
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit,
            "seed": str(seed), "contract_version": str(CONTRACT_VERSION),
            "medfraud_version": __version__}
    if dataset_digest:
        tags["dataset.digest"] = dataset_digest
    return tags


# --------------------------------------------------------------------------- comparison

def _runs_frame(client: MlflowClient, experiment_ids: list[str]) -> list[Any]:
    return client.search_runs(experiment_ids, filter_string=f"tags.`{TAG_KIND}` = 'detector'",
                              max_results=50000, order_by=["attributes.start_time DESC"])


def compare_runs(experiment: str | None = None, metric: str | None = None, *,
                 uri: str | None = None, latest_only: bool = True) -> pl.DataFrame:
    """Detector runs side by side, one row per metric key (and sweep point), with the best
    run of each row.

    Parameters
    ----------
    experiment : MLflow experiment name; None compares every experiment in the store.
    metric : a full metric key (``test.doctor.collusion_ring.auprc``) or a metric name
        matched as the key's last part (``auprc``, the default).
    uri : tracking URI (see :func:`resolve_uri`).
    latest_only : keep only the detector runs of each experiment's latest parent run.

    Returns
    -------
    DataFrame with columns ``key`` (``<split>.<level>.<typology>.<metric>``), ``point``
    (the sweep point, e.g. ``camouflage=0.6``; only when the runs come from a sweep: runs
    are compared within a point, never across points), one Float64 column per detector
    (prefixed with the experiment when several are compared), ``best`` (label of the best
    run of the row, null when every value is NaN) and ``best_value``.  Rows are sorted by
    key, then sweep point in run order.  Empty (only ``key``) when nothing matches.

    Raises
    ------
    KeyError when ``experiment`` does not exist (the message lists the ones that do).
    """
    uri = resolve_uri(uri)
    client = MlflowClient(uri)
    experiments = client.search_experiments()
    if experiment is not None:
        chosen = [e for e in experiments if e.name == experiment]
        if not chosen:
            raise KeyError(f"no MLflow experiment named {experiment!r} in {uri}; "
                           f"available: {sorted(e.name for e in experiments)}")
    else:
        chosen = list(experiments)
    runs = _runs_frame(client, [e.experiment_id for e in chosen]) if chosen else []
    names = {e.experiment_id: e.name for e in chosen}
    if latest_only and runs:
        latest: dict[str, str] = {}
        for run in runs:  # newest first: the first parent seen per experiment is the latest
            latest.setdefault(run.info.experiment_id, run.data.tags.get("mlflow.parentRunId", ""))
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId", "") == latest[r.info.experiment_id]]
    wanted = metric or "auprc"
    several = len({r.info.experiment_id for r in runs}) > 1
    # (sweep point, run label) -> metrics.  Runs of a sweep are compared within their point:
    # a dataset sweep's points are different data (every detector scores best at the easiest
    # camouflage), and choosing a parameter on the test split would be choosing on test.
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for run in reversed(runs):  # oldest first, so columns follow run order
        label = run.data.tags.get(TAG_DETECTOR, run.info.run_name or run.info.run_id[:8])
        point = run.data.tags.get(TAG_POINT) or ""
        if several:
            label = f"{names[run.info.experiment_id]}/{label}"
        if (point, label) in cells:
            label += f"#{run.info.run_id[:6]}"
        cells[(point, label)] = {k: v for k, v in run.data.metrics.items()
                                 if k == wanted or k.rsplit(".", 1)[-1] == wanted}
    labels = list(dict.fromkeys(label for _, label in cells))
    points = list(dict.fromkeys(point for point, _ in cells))
    swept = points != [""]
    rows = sorted({(k, points.index(point)) for (point, _), values in cells.items() for k in values})
    frame = pl.DataFrame({"key": pl.Series([k for k, _ in rows], dtype=pl.String)})
    if not rows:
        return frame
    if swept:
        frame = frame.with_columns(pl.Series("point", [points[i] for _, i in rows], dtype=pl.String))
    matrix = np.array([[cells.get((points[i], label), {}).get(k, math.nan) for label in labels]
                       for k, i in rows], dtype=np.float64).reshape(len(rows), len(labels))
    frame = frame.with_columns(pl.Series(label, matrix[:, j], dtype=pl.Float64)
                               for j, label in enumerate(labels))
    finite = np.where(np.isnan(matrix), -np.inf, matrix)
    has_value = ~np.isnan(matrix).all(axis=1)
    best_idx = finite.argmax(axis=1)
    best = [labels[i] if ok else None for i, ok in zip(best_idx, has_value)]
    best_value = np.where(has_value, finite[np.arange(len(rows)), best_idx], np.nan)
    return frame.with_columns(pl.Series("best", best, dtype=pl.String),
                              pl.Series("best_value", best_value, dtype=pl.Float64))
