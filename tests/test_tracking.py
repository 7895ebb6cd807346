"""MLflow tracking against a temporary sqlite store: keys, tags, FAILED runs, comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from medfraud import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


def _child(name: str, metrics: dict[str, float], point: str | None = None):
    tags = {tracking.TAG_KIND: "detector", tracking.TAG_DETECTOR: name}
    if point:
        tags[tracking.TAG_POINT] = point
    with tracking.start_run(f"{name}[{point}]" if point else name, nested=True, tags=tags) as run:
        run.log_metrics(metrics, prefix="test")
    return run.run_id


def test_resolve_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.resolve_uri() == "http://mlflow.example:5000"
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_absolute_uri_fixes_a_relative_sqlite_path_only(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.absolute_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert tracking.absolute_uri("http://mlflow.example:5000") == "http://mlflow.example:5000"


def test_child_of_a_parent_that_is_not_the_active_run(store):
    # What a Ray worker does: the parent runs in another process, so it is not active here.
    client = MlflowClient(store)
    experiment_id = tracking.ensure_experiment("unit-parent", store)
    parent = client.create_run(experiment_id, run_name="exp")  # RUNNING, not active here
    assert mlflow.active_run() is None
    with tracking.start_run("child", parent=parent.info.run_id, tags={"k": "v"}) as child:
        child.log_metrics({"claim.all.auprc": 0.5}, prefix="test")
    got = client.get_run(child.run_id)
    assert got.info.status == "FINISHED" and got.info.experiment_id == experiment_id
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id and got.data.tags["k"] == "v"
    assert got.data.metrics == {"test.claim.all.auprc": 0.5}
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"  # left to its owner


def test_a_dataset_row_created_by_a_concurrent_writer_is_linked_on_retry(store, tmp_path,
                                                                          monkeypatch):
    # Two processes logging one dataset race in MLflow's get-or-create: the loser's insert
    # breaks the unique key; the row then exists and logging again links it.
    from mlflow.exceptions import MlflowException

    real, calls = mlflow.log_input, []

    def racing(dataset, context=None, **kwargs):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                  "datasets.experiment_id, datasets.name, datasets.digest")
        return real(dataset, context=context, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with tracking.start_run("exp", experiment="unit-race", uri=store) as run:
        run.log_dataset(pl.DataFrame({"table": ["claims"], "rows": [10]}), name="tiny",
                        source=str(tmp_path), digest="f" * 64, context="train")
    assert calls == ["train", "train"]
    inputs = MlflowClient(store).get_run(run.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["tiny"]
    monkeypatch.setattr(mlflow, "log_input", lambda *a, **k: (_ for _ in ()).throw(
        MlflowException("RESOURCE_DOES_NOT_EXIST")))
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        with tracking.start_run("exp", experiment="unit-race", uri=store) as run:
            run.log_dataset(pl.DataFrame({"table": ["claims"], "rows": [10]}), name="tiny",
                            source=str(tmp_path), digest="f" * 64, context="train")


def test_metric_key_sanitises_forbidden_characters():
    assert tracking.metric_key("test", "claim.upcoding.rec@1%") == "test.claim.upcoding.rec_1_"
    assert tracking.metric_key("test", "doctor.collusion_ring.auprc") == "test.doctor.collusion_ring.auprc"


def test_parent_child_metrics_tags_and_artifacts(store, tmp_path):
    tags = {tracking.TAG_KIND: "experiment", **tracking.standard_tags(seed=5, dataset_digest="abc123")}
    with tracking.start_run("exp", experiment="unit", uri=store, tags=tags) as parent:
        parent.log_params({f"p{i}": i for i in range(150)} | {"long": "x" * 10000})
        parent.log_text("name: exp\n", "config/experiment.yaml")
        parent.log_dataset(pl.DataFrame({"table": ["claims"], "rows": [10]}), name="tiny",
                           source=str(tmp_path), digest="abc123" * 8, context="train")
        child_id = _child("lgbm", {"doctor.collusion_ring.auprc": 0.4,
                                   "claim.upcoding.auprc": math.nan})
        with tracking.start_run("state", nested=True) as other:
            other.log_state("lightgbm_claim", {"family": "lightgbm", "model": "tree\n" * 2000,
                                               "blob": b"\x00\x01", "w": np.arange(3.0)})
            other.log_frame(pl.DataFrame({"id": ["C1"], "score": [0.9], "reasons": [["a", "b"]]}),
                            "alerts/top_alerts.parquet")
    client = MlflowClient(store)
    run = client.get_run(parent.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["seed"] == "5" and run.data.tags["dataset.digest"] == "abc123"
    assert run.data.tags["contract_version"] == "1"
    assert len(run.data.tags["git_commit"]) == 40 or run.data.tags["git_commit"] == "unknown"
    assert run.data.params["p149"] == "149" and len(run.data.params["long"]) == 6000
    assert run.inputs.dataset_inputs[0].dataset.digest == ("abc123" * 8)[:36]
    child = client.get_run(child_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.run_id
    assert child.data.metrics["test.doctor.collusion_ring.auprc"] == pytest.approx(0.4)
    assert math.isnan(child.data.metrics["test.claim.upcoding.auprc"])
    files = {a.path for a in client.list_artifacts(other.run_id, "state/lightgbm_claim")}
    assert files == {"state/lightgbm_claim/state.json", "state/lightgbm_claim/model.txt",
                     "state/lightgbm_claim/blob.bin"}
    local = mlflow.artifacts.download_artifacts(run_id=other.run_id, artifact_path="",
                                                dst_path=str(tmp_path / "dl"), tracking_uri=store)
    saved = json.loads((Path(local) / "state/lightgbm_claim/state.json").read_text())
    assert saved["model"] == {"__file__": "model.txt"} and saved["w"] == [0.0, 1.0, 2.0]
    assert (Path(local) / "alerts/top_alerts.csv").read_text().splitlines()[1] == "C1,0.9,a|b"
    assert pl.read_parquet(Path(local) / "alerts/top_alerts.parquet")["reasons"].to_list() == [["a", "b"]]


def test_crash_marks_run_failed_and_reraises(store):
    with pytest.raises(ZeroDivisionError):
        with tracking.start_run("boom", experiment="crash", uri=store) as parent:
            with tracking.start_run("child", nested=True) as child:
                1 / 0
    client = MlflowClient(store)
    for run_id in (parent.run_id, child.run_id):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags["error"] == "ZeroDivisionError: division by zero"
    assert mlflow.active_run() is None


def test_nested_run_without_parent_is_refused():
    with pytest.raises(RuntimeError, match="needs an active parent"):
        with tracking.start_run("orphan", nested=True):
            pass


def test_compare_runs_side_by_side(store):
    for auprc in ((0.1, 0.2), (0.3, 0.25)):  # two runs of the experiment; latest wins
        with tracking.start_run("exp", experiment="cmp", uri=store):
            _child("rules", {"claim.upcoding.auprc": auprc[0], "claim.upcoding.auroc": 0.6,
                             "doctor.collusion_ring.auprc": math.nan})
            _child("lgbm", {"claim.upcoding.auprc": auprc[1], "claim.upcoding.auroc": 0.9,
                            "doctor.collusion_ring.auprc": 0.5})
    table = tracking.compare_runs("cmp", uri=store)
    assert table.columns == ["key", "rules", "lgbm", "best", "best_value"]
    rows = {r["key"]: r for r in table.iter_rows(named=True)}
    assert set(rows) == {"test.claim.upcoding.auprc", "test.doctor.collusion_ring.auprc"}
    assert rows["test.claim.upcoding.auprc"]["rules"] == pytest.approx(0.3)
    assert rows["test.claim.upcoding.auprc"]["best"] == "rules"
    assert rows["test.doctor.collusion_ring.auprc"]["best"] == "lgbm"
    full = tracking.compare_runs("cmp", "test.claim.upcoding.auroc", uri=store, latest_only=False)
    assert full.height == 1 and full.width == 1 + 4 + 2
    assert full["best_value"][0] == pytest.approx(0.9)
    everything = tracking.compare_runs(None, "auprc", uri=store)
    assert any(c.startswith("cmp/") for c in everything.columns)
    with pytest.raises(KeyError, match="available"):
        tracking.compare_runs("nope", uri=store)


def test_compare_runs_of_a_sweep_compares_within_each_point(store):
    """A sweep's points are different data (or parameters chosen on the test split): each
    row compares the detectors at one point.  Across points, the easiest camouflage would
    make one detector 'best' everywhere."""
    with tracking.start_run("sweep", experiment="camo", uri=store):
        for point, (rules, lgbm) in {"camouflage=0.0": (0.2, 0.9),
                                     "camouflage=0.9": (0.3, 0.1)}.items():
            _child("rules", {"claim.upcoding.auprc": rules}, point=point)
            _child("lgbm", {"claim.upcoding.auprc": lgbm}, point=point)
    table = tracking.compare_runs("camo", uri=store)
    assert table.columns == ["key", "point", "rules", "lgbm", "best", "best_value"]
    assert table["point"].to_list() == ["camouflage=0.0", "camouflage=0.9"]
    assert table["best"].to_list() == ["lgbm", "rules"]
    assert table["best_value"].to_list() == pytest.approx([0.9, 0.3])
    assert table["rules"].to_list() == pytest.approx([0.2, 0.3])
