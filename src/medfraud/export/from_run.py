"""``medfraud export``: turn a tracked experiment run into a registered scoring model.

The run (see :mod:`medfraud.tracking` for its layout) supplies the resolved config
(``config/experiment.yaml`` of the parent run), the dataset path and digest (parent tags)
and each detector's saved state (``state/<detector>/`` of the child runs).  The dataset is
re-opened (its digest must match the run's), the run's split is rebuilt with the run's
seed, and :func:`medfraud.export.build.build_pipeline` assembles the pipeline: history and
peer reference = the train window, calibration = the test side of the split.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from medfraud.export.model_io import (
    input_example,
    pip_requirements,
    register_model,
    save_model,
    tracking_uri,
)

TAG_KIND = "medfraud.kind"
TAG_DETECTOR = "medfraud.detector"
TAG_POINT = "medfraud.sweep_point"


class ExportError(RuntimeError):
    """The run cannot be exported; the message says why and what to do."""


@dataclass
class ExportResult:
    """What :func:`export_run` produced."""

    model_dir: Path
    name: str
    version: str
    run_id: str
    card: dict[str, Any]
    pipeline: Any = None  # the in-process ScoringPipeline that was saved


def _client(uri: str | None):
    from mlflow.tracking import MlflowClient

    resolved = tracking_uri(uri)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


def find_parent_run(client, run_id: str | None = None, experiment: str | None = None):
    """The experiment's parent run: ``run_id`` (a child id leads to its parent) or the latest
    finished parent run of ``experiment``."""
    if (run_id is None) == (experiment is None):
        raise ExportError("give exactly one of --run RUN_ID or --experiment NAME")
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception as exc:  # MlflowException for unknown ids
            raise ExportError(f"run {run_id!r} not found in the tracking store ({exc})") from None
        parent = run.data.tags.get("mlflow.parentRunId")
        if run.data.tags.get(TAG_KIND) == "detector" and parent:
            run = client.get_run(parent)
        if run.data.tags.get(TAG_KIND) != "experiment":
            raise ExportError(f"run {run_id} is not a medfraud experiment run (tag {TAG_KIND} is "
                              f"{run.data.tags.get(TAG_KIND)!r})")
        return run
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ExportError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.`{TAG_KIND}` = 'experiment' and "
                                            "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ExportError(f"experiment {experiment!r} has no finished medfraud run")
    return runs[0]


def _load_state(folder: Path) -> Any:
    """A state logged by ``TrackedRun.log_state``: state.json with ``{"__file__": ...}`` refs."""
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    if not isinstance(state, dict):
        return state
    for key, value in list(state.items()):
        if isinstance(value, dict) and set(value) == {"__file__"}:
            file = folder / value["__file__"]
            state[key] = file.read_bytes() if file.suffix == ".bin" else file.read_text(encoding="utf-8")
    return state


def load_run_detectors(client, parent, workdir: Path, only: list[str] | None = None):
    """Rebuild the fitted detectors of a run's children: name -> detector, plus their metrics."""
    from medfraud.detectors.state import detector_from_state

    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    points = {c.data.tags.get(TAG_POINT) for c in children if c.data.tags.get(TAG_POINT)}
    if len(points) > 1:
        raise ExportError(f"run {parent.info.run_id} is a sweep over {len(points)} points; export "
                          "one configuration (rerun it without sweep)")
    detectors, metrics, order = {}, {}, []
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        name = child.data.tags.get(TAG_DETECTOR)
        if name is None or (only is not None and name not in only):
            continue
        order.append(name)
        artifacts = client.list_artifacts(child.info.run_id, "state")
        if not artifacts:
            continue  # no saved state: the builder reports it as skipped
        local = Path(client.download_artifacts(child.info.run_id, "state", str(workdir / name)))
        folders = [p for p in local.iterdir() if (p / "state.json").is_file()]
        if len(folders) != 1:
            raise ExportError(f"detector {name}: expected one state folder under state/, found "
                              f"{[p.name for p in local.iterdir()]}")
        detectors[name] = detector_from_state(_load_state(folders[0]))
        metrics.update({f"{name}.{k}": v for k, v in child.data.metrics.items()
                        if k.endswith((".auprc", ".auroc"))})
    if only is not None:
        unknown = sorted(set(only) - set(order))
        if unknown:
            raise ExportError(f"--detectors names {unknown}, not detectors of run "
                              f"{parent.info.run_id} (it has {sorted(order)})")
    missing = [n for n in order if n not in detectors]
    return detectors, metrics, missing


def export_run(*, name: str, run_id: str | None = None, experiment: str | None = None,
               out: str | Path | None = None, uri: str | None = None,
               detectors: list[str] | None = None, calibration_method: str = "platt",
               overwrite: bool = False, register: bool = True) -> ExportResult:
    """Export a tracked run as an MLflow pyfunc model and register it as ``name@champion``.

    Parameters
    ----------
    name : registered model name (also the default folder ``models/<name>``).
    run_id, experiment : the run (a parent or child id) or the experiment whose latest
        finished run is exported; exactly one.
    out : model folder (default ``models/<name>``).
    uri : tracking URI (default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
    detectors : detector names of the run to include; default every detector except
        ensembles (the pipeline combines detectors itself).
    calibration_method : "platt" or "isotonic".
    overwrite : replace an existing model folder.
    register : register the model (False: only write the folder).
    """
    from medfraud.config import ConfigError, ExperimentConfig
    from medfraud.dataset import Dataset
    from medfraud.experiment import GRAPH_FAMILIES, build_window_features, make_split
    from medfraud.export.build import build_pipeline
    from medfraud.export.model_card import build_card
    from medfraud.features import FeatureParams
    from medfraud.labels import Labels

    client = _client(uri)
    parent = find_parent_run(client, run_id, experiment)
    run_id = parent.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            config_file = client.download_artifacts(run_id, "config/experiment.yaml", str(work))
        except Exception as exc:
            raise ExportError(f"run {run_id} has no config/experiment.yaml artifact ({exc})") from None
        try:
            config = ExperimentConfig.model_validate(yaml.safe_load(Path(config_file).read_text("utf-8")))
        except Exception as exc:
            raise ConfigError(f"run {run_id}: its config/experiment.yaml is not a valid experiment "
                              f"config ({exc})") from None
        found, run_metrics, without_state = load_run_detectors(client, parent, work, detectors)
    if detectors is None:
        found = {n: d for n, d in found.items() if d.family != "ensemble"}
    if not found:
        raise ExportError(f"run {run_id} has no detector with a saved state to export")

    dataset_path = parent.data.tags.get("dataset.path") or str(config.dataset.resolved_path(config.seed))
    if not Path(dataset_path).is_dir():
        raise ExportError(f"the run's dataset {dataset_path} is not there; regenerate it (same "
                          "preset and seed) or restore it before exporting")
    dataset = Dataset(dataset_path)
    expected = parent.data.tags.get("dataset.digest")
    if expected and expected != dataset.digest:
        raise ExportError(f"dataset {dataset_path} has digest {dataset.digest[:12]}… but the run "
                          f"used {expected[:12]}…: the data changed since the run")
    labels = Labels.from_dataset(dataset)
    split = make_split(config, dataset, labels)
    dates = dataset.scan("claims").select(pl.col("service_date").min().alias("a"),
                                          pl.col("service_date").max().alias("b")).collect().row(0)
    train_window = split.train_window or (dates[0], dates[1])
    test_window = split.test_window or (dates[0], dates[1])

    catalogue = catalogue_yaml = None
    if config.rules.enabled:
        from medfraud.rules import load_catalogue

        catalogue = load_catalogue(config.rules.catalogue)
        catalogue_yaml = catalogue.to_yaml()
    with_graph = any(d.family in GRAPH_FAMILIES for d in found.values())
    train = build_window_features(config, dataset, train_window, None, catalogue, with_graph)
    context_cols = ["claim_id", "service_date", "patient_id"]
    if split.grouped:
        context_cols = list(dict.fromkeys(context_cols + [f"{split.group_level}_id"]))
    test_claims = (dataset.scan("claims").select(context_cols)
                   .filter(pl.col("service_date").is_between(test_window[0], test_window[1]))
                   .collect())
    holdout = test_claims.filter(split.mask("claim", test_claims, "test")).select("claim_id")
    feature_params = FeatureParams(**config.features.params) if config.features.params else None
    meta = {"run_id": run_id, "experiment": config.experiment_name, "split": split.name,
            "tracking_uri": tracking_uri(uri)}
    pipeline, report = build_pipeline(
        dataset, found, train, train_window=train_window, holdout=holdout, labels=labels,
        name=name, catalogue_yaml=catalogue_yaml, feature_params=feature_params,
        calibration_method=calibration_method, meta=meta)
    skipped = {**report.skipped, **{n: "no saved state in the run" for n in without_state}}
    typologies = labels.claims["typology"].unique().sort().to_list() + \
        labels.entities["typology"].unique().sort().to_list()
    pipeline.card = build_card(
        name=name, data_digest=dataset.digest, dataset_path=str(Path(dataset_path).resolve()),
        manifest=dataset.manifest, train_window=train_window, holdout_window=test_window,
        detectors=[{"name": p.name, "family": p.family, "level": p.level, "weight": p.weight}
                   for p in pipeline.detectors],
        skipped=skipped, holdout_metrics=report.holdout_metrics, run_metrics=run_metrics,
        run={"run_id": run_id, "experiment": config.experiment_name, "seed": config.seed,
             "split": split.name},
        calibration=pipeline.calibration.to_json(), bands=pipeline.bands.to_json(),
        typologies_seen=sorted(set(typologies)), pip_requirements=pip_requirements())
    claims = dataset.scan("claims").join(holdout.lazy(), on="claim_id", how="semi").collect()
    lines = dataset.scan("claim_lines").join(holdout.lazy(), on="claim_id", how="semi").collect()
    example = input_example(pipeline, claims, lines)
    model_dir = save_model(pipeline, Path(out) if out else Path("models") / name, example,
                           overwrite=overwrite)
    version = ""
    if register:
        version = register_model(model_dir, name, uri=uri,
                                 tags={"source_run_id": run_id, "data_digest": dataset.digest})
    return ExportResult(model_dir, name, version, run_id, pipeline.card, pipeline)
