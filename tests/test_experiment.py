"""The experiment runner: pieces on hand-built frames, then quickstart end to end on ``tiny``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from medfraud.config import DatasetConfig, DetectorConfig
from medfraud.dataset import InMemoryDataset
from medfraud.detectors.base import REGISTRY, Detector, register, score_frame
from medfraud.evaluate.splits import Split
from medfraud.experiment import (
    _detector_order,
    build_detector,
    ensure_dataset,
    restrict_labels,
    rollup_scores,
)
from medfraud.labels import Labels
from medfraud.schema import DataError

LABEL_SCHEMA = {"claim_id": pl.String, "typology": pl.String, "ring_id": pl.String}
ENTITY_SCHEMA = {"entity_type": pl.String, "entity_id": pl.String, "typology": pl.String,
                 "ring_id": pl.String}
AUDIT_SCHEMA = {"entity_type": pl.String, "entity_id": pl.String, "audited_on": pl.Date,
                "is_fraud": pl.Boolean, "typology": pl.String}


class FakeMeanDetector(Detector):
    """Score = mean of the level's feature columns (a deterministic stand-in)."""

    def __init__(self, level: str = "claim", seed: int = 0, members: list | None = None):
        super().__init__(level, seed=seed, members=list(members or []))

    def fit(self, features, labels=None):
        self.fitted_ = True
        return self

    def score(self, features):
        self._check_fitted("fitted_")
        X = features.matrix(self.level)
        return score_frame(features.ids(self.level), np.nanmean(X, axis=1))


@pytest.fixture
def fake_families():
    """Register the fake families for one test only (the registry is process-wide)."""
    register("fake_mean")(FakeMeanDetector)
    register("fake_crash")(CrashingDetector)
    yield
    REGISTRY.pop("fake_mean", None)
    REGISTRY.pop("fake_crash", None)


def test_rollup_takes_the_top_claim_per_entity():
    claims = pl.DataFrame({"claim_id": ["C1", "C2", "C3", "C4"],
                           "doctor_id": ["D1", "D1", "D2", None]})
    scores = pl.DataFrame({"id": ["C1", "C2", "C3", "C4"], "score": [0.2, 0.9, 0.5, 1.0],
                           "reasons": [["a"], ["b"], ["c"], ["d"]]})
    out = rollup_scores(scores, claims, "doctor").sort("id")
    assert out["id"].to_list() == ["D1", "D2"]
    assert out["score"].to_list() == [0.9, 0.5]
    assert out["reasons"].to_list() == [["b"], ["c"]]


def test_detector_order_puts_ensembles_after_members():
    blocks = {"ens": DetectorConfig(family="ensemble", members=["a", "b"]),
              "a": DetectorConfig(family="rules"), "b": DetectorConfig(family="pyod")}
    assert _detector_order(blocks) == ["a", "b", "ens"]
    cyclic = {"x": DetectorConfig(family="ensemble", members=["y"]),
              "y": DetectorConfig(family="ensemble", members=["x"])}
    with pytest.raises(ValueError, match="cycle"):
        _detector_order(cyclic)


def test_build_detector_injects_seed_and_fitted_members(fake_families):
    member = FakeMeanDetector().fit(None)
    det = build_detector(DetectorConfig(family="fake_mean", members=["m"]), 42, {"m": member})
    assert det.params["seed"] == 42 and det.params["members"] == [member]
    explicit = build_detector(DetectorConfig(family="fake_mean", params={"seed": 1}), 42, {})
    assert explicit.params["seed"] == 1
    with pytest.raises(KeyError, match="unknown detector family 'nope'"):
        build_detector(DetectorConfig(family="nope"), 0, {})
    assert "fake_mean" in REGISTRY


def test_restrict_labels_keeps_only_the_train_side():
    claims = pl.DataFrame({
        "claim_id": ["C1", "C2", "C3", "C4", "C5"],
        "service_date": [date(2024, 1, 5), date(2024, 1, 6), date(2024, 8, 1), date(2024, 1, 7),
                         date(2024, 9, 1)],
        "patient_id": ["P1", "P2", "P1", "P2", "P2"], "doctor_id": ["D1", "D2", "D1", "D1", "D2"]})
    split = Split("temporal_grouped[doctor]", (date(2024, 1, 1), date(2024, 6, 30)),
                  (date(2024, 7, 1), date(2024, 12, 31)), "doctor",
                  train_ids={"doctor": frozenset({"D1"}), "patient": frozenset({"P1", "P2"}),
                             "pharmacy": frozenset(), "facility": frozenset()},
                  test_ids={"doctor": frozenset({"D2"}), "patient": frozenset(),
                            "pharmacy": frozenset(), "facility": frozenset()})
    labels = Labels(
        pl.DataFrame({"claim_id": ["C1", "C2", "C3", "C5"], "typology": "upcoding", "ring_id": None},
                     schema=LABEL_SCHEMA),
        pl.DataFrame({"entity_type": ["doctor", "doctor", "patient"], "entity_id": ["D1", "D2", "P1"],
                      "typology": "collusion_ring", "ring_id": "R1"}, schema=ENTITY_SCHEMA),
        pl.DataFrame({"entity_type": ["claim", "claim", "doctor"], "entity_id": ["C4", "C2", "D2"],
                      "audited_on": date(2024, 3, 1), "is_fraud": [False, True, True],
                      "typology": [None, "upcoding", "collusion_ring"]}, schema=AUDIT_SCHEMA))
    train = restrict_labels(labels, split, InMemoryDataset({"claims": claims}), "train")
    # C2 is a test-side doctor's claim, C3 is after the train window: neither trains
    assert train.claims["claim_id"].to_list() == ["C1"]
    assert sorted(train.entities["entity_id"].to_list()) == ["D1", "P1"]
    assert train.audited["entity_id"].to_list() == ["C4"]
    test = restrict_labels(labels, split, InMemoryDataset({"claims": claims}), "test")
    assert test.claims["claim_id"].to_list() == ["C5"]
    assert test.entities["entity_id"].to_list() == ["D2"]


def test_ensure_dataset_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ensure_dataset(DatasetConfig(path=str(tmp_path / "nowhere")), 0)
    with pytest.raises(FileNotFoundError, match="preset 'tiny' is missing at data/tiny-seed3"):
        ensure_dataset(DatasetConfig(preset="tiny"), 3)
    calls = []

    def broken_generator(dataset, seed, out):
        calls.append((dataset.preset, seed, Path(out)))
        Path(out).mkdir(parents=True)
        (Path(out) / "manifest.json").write_text("{}")
        return out

    with pytest.raises(DataError, match="table is missing"):
        ensure_dataset(DatasetConfig(preset="tiny"), 3, broken_generator)
    assert calls == [("tiny", 3, Path("data/tiny-seed3"))]


# --------------------------------------------------------------------------- end to end

REPO = Path(__file__).resolve().parents[1]
CAMOUFLAGE = 0.6  # the tiny preset is blatant; camouflage is where models should beat rules


QUICKSTART_DETECTORS = {"rules": "claim", "iforest": "claim", "lightgbm": "claim",
                        "lightgbm_doctor": "doctor", "lightgbm_patient": "patient",
                        "lightgbm_pharmacy": "pharmacy", "ensemble": "claim"}


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """``medfraud run experiments/quickstart.yaml --set dataset.preset=tiny`` (camouflaged)."""
    from typer.testing import CliRunner

    from medfraud.cli import app

    folder = tmp_path_factory.mktemp("quickstart")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = CliRunner().invoke(app, [
        "run", str(REPO / "experiments/quickstart.yaml"), "--set", "dataset.preset=tiny",
        "--set", f"dataset.camouflage={CAMOUFLAGE}", "--set", f"dataset.path={folder / 'tiny'}",
        "--set", f"tracking.uri={uri}", "--set", "tracking.experiment=e2e"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return uri, folder, result.output


def _runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("medfraud.kind") == "experiment"]
    children = {r.data.tags["medfraud.detector"]: r for r in runs
                if r.data.tags.get("medfraud.kind") == "detector"}
    assert len(parent) == 1
    return client, parent[0], children


def test_quickstart_logs_every_metric_key(quickstart_run):
    from medfraud.evaluate.metrics import metric_names
    from medfraud.labels import TYPOLOGY_LEVEL
    from medfraud.schema import LEVELS

    uri, _, output = quickstart_run
    client, parent, children = _runs(uri)
    assert set(children) == set(QUICKSTART_DETECTORS)
    assert parent.info.status == "FINISHED"

    def expected_at(levels):
        return {f"test.{level}.{typology}.{metric}"
                for level in levels
                for typology in ["all", *[t for t, lvl in TYPOLOGY_LEVEL.items() if lvl == level]]
                for metric in [*metric_names((0.01, 0.05)), "prevalence"]}

    for name, run in children.items():
        # claim detectors are also judged at every entity level; entity detectors at their own
        level = QUICKSTART_DETECTORS[name]
        expected = expected_at(LEVELS if level == "claim" else [level])
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        missing = expected - set(run.data.metrics)
        assert not missing, f"{name} lacks {sorted(missing)[:5]}"
        assert run.data.tags["dataset.digest"] == parent.data.tags["dataset.digest"]
    assert parent.data.tags["seed"] == "7" and parent.data.tags["contract_version"] == "1"
    assert parent.data.params["dataset.camouflage"] == str(CAMOUFLAGE)
    assert "AUPRC" in output and "lightgbm" in output


def test_quickstart_logs_artifacts_for_review_and_export(quickstart_run, tmp_path):
    import mlflow
    import yaml

    from medfraud.config import ExperimentConfig

    uri, _, _ = quickstart_run
    client, parent, children = _runs(uri)
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, dst_path=str(tmp_path / "p"),
                                                     tracking_uri=uri))
    config = ExperimentConfig.model_validate(yaml.safe_load((local / "config/experiment.yaml").read_text()))
    assert config.dataset.camouflage == CAMOUFLAGE and list(config.detectors) == list(QUICKSTART_DETECTORS)
    assert pl.read_parquet(local / "metrics/metrics_table.parquet").height > 0
    lgbm = Path(mlflow.artifacts.download_artifacts(run_id=children["lightgbm"].info.run_id,
                                                    dst_path=str(tmp_path / "l"), tracking_uri=uri))
    alerts = pl.read_parquet(lgbm / "alerts/top_alerts.parquet")
    assert alerts.height == 100 and alerts["rank"].to_list() == list(range(1, 101))
    assert alerts["score"].is_sorted(descending=True) and alerts["reasons"][0].len() > 0
    assert {"doctor_id", "fund_paid"} <= set(alerts.columns)
    audit_k = int(children["lightgbm"].data.params["audit.k"])  # 1 % of the test claims
    assert alerts["within_audit_budget"].sum() == min(audit_k, 100) and alerts["within_audit_budget"][0]
    assert (lgbm / "importance/feature_importance.parquet").is_file()
    assert {"pr_claim.png", "roc_claim.png", "hist_claim.png"} <= {p.name for p in (lgbm / "plots").iterdir()}
    state = next((lgbm / "state").iterdir())
    assert (state / "state.json").is_file()
    from medfraud.detectors.state import detector_from_state

    manifest = json.loads((state / "state.json").read_text())
    restored = {k: ((state / v["__file__"]).read_text() if isinstance(v, dict) and "__file__" in v else v)
                for k, v in manifest.items()}
    assert detector_from_state(restored).level == "claim"


def test_quickstart_detectors_beat_random_and_lightgbm_beats_rules(quickstart_run):
    uri, _, _ = quickstart_run
    _, _, children = _runs(uri)

    def auprc(name, key):
        return children[name].data.metrics[f"test.{key}.auprc"]

    for name, run in children.items():
        if name == "lightgbm_pharmacy":
            continue  # tiny has 18 pharmacies: its test side is too small to judge
        lifts = {k[:-len(".auprc")]: v / run.data.metrics[k[:-len("auprc")] + "prevalence"]
                 for k, v in run.data.metrics.items()
                 if k.endswith(".auprc") and ".all." not in k and v == v}
        if not lifts:  # e.g. no stock-mismatch pharmacy on tiny's test side: judge any fraud
            lifts = {k[:-len(".auprc")]: v / run.data.metrics[k[:-len("auprc")] + "prevalence"]
                     for k, v in run.data.metrics.items() if k.endswith(".auprc") and v == v}
        assert max(lifts.values()) > 2.0, f"{name} is no better than random: {lifts}"
    # Camouflaged fraud sits under the rules' thresholds; a learned model still ranks it.
    for key in ("claim.all", "doctor.collusion_ring"):
        assert auprc("lightgbm", key) > auprc("rules", key), key


def test_compare_command_prints_the_runs(quickstart_run):
    from typer.testing import CliRunner

    from medfraud.cli import app

    uri, _, _ = quickstart_run
    out = CliRunner().invoke(app, ["compare", "--experiment", "e2e", "--uri", uri,
                                   "--metric", "test.doctor.collusion_ring.auprc"], env={"COLUMNS": "240"})
    assert out.exit_code == 0, out.output
    assert "test.doctor.collusion_ring.auprc" in out.output and "lightgbm" in out.output
    bad = CliRunner().invoke(app, ["compare", "--experiment", "nope", "--uri", uri])
    assert bad.exit_code == 2 and "available" in bad.output


def test_run_command_config_error_exits_2(tmp_path):
    from typer.testing import CliRunner

    from medfraud.cli import app

    out = CliRunner().invoke(app, ["run", str(REPO / "experiments/quickstart.yaml"),
                                   "--set", "detectors.lightgbm.famly=x"], terminal_width=200)
    assert out.exit_code == 2
    assert "did you mean 'family'" in out.output


class CrashingDetector(Detector):
    def fit(self, features, labels=None):
        raise RuntimeError("fit exploded on purpose")

    def score(self, features):  # pragma: no cover - never reached
        raise AssertionError


def test_crash_marks_runs_failed(quickstart_run, tmp_path, fake_families):
    from mlflow.tracking import MlflowClient

    from medfraud.config import load_experiment
    from medfraud.experiment import run_experiment

    _, folder, _ = quickstart_run
    uri = f"sqlite:///{tmp_path / 'crash.db'}"
    config = load_experiment(REPO / "experiments/quickstart.yaml", [
        "dataset.preset=tiny", f"dataset.camouflage={CAMOUFLAGE}", f"dataset.path={folder / 'tiny'}",
        f"tracking.uri={uri}", "features.levels=[claim]", "rules.enabled=false",
        "detectors={boom: {family: fake_crash}}"])
    with pytest.raises(RuntimeError, match="exploded"):
        run_experiment(config)
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("quickstart").experiment_id])
    assert {r.info.status for r in runs} == {"FAILED"} and len(runs) == 2
    assert all(r.data.tags["error"] == "RuntimeError: fit exploded on purpose" for r in runs)


def test_sweep_points_are_tagged_children_with_identical_keys(quickstart_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from medfraud.config import load_experiment
    from medfraud.experiment import run_experiment
    from medfraud.tracking import compare_runs

    _, folder, _ = quickstart_run
    uri = f"sqlite:///{tmp_path / 'sweep.db'}"
    config = load_experiment(REPO / "experiments/quickstart.yaml", [
        "dataset.preset=tiny", f"dataset.camouflage={CAMOUFLAGE}", f"dataset.path={folder / 'tiny'}",
        f"tracking.uri={uri}", "features.levels=[claim, doctor]",
        "detectors={rules: {family: rules}}", "sweep={detectors.rules.params.base: [0.5, 2.0]}"])
    steps = []
    result = run_experiment(config, progress=lambda msg, done, total: steps.append((msg, done, total)))
    assert steps[-1][1:] == (2 * 5, 2 * 5) and "[base=2.0]" in steps[-1][0]
    assert set(result.child_run_ids) == {"rules[base=0.5]", "rules[base=2.0]"}
    assert result.metrics["point"].unique().sort().to_list() == ["base=0.5", "base=2.0"]
    client = MlflowClient(uri)
    runs = [client.get_run(run_id) for run_id in result.child_run_ids.values()]
    assert {r.data.tags["medfraud.sweep_point"] for r in runs} == {"base=0.5", "base=2.0"}
    assert {r.data.params["sweep.detectors.rules.params.base"] for r in runs} == {"0.5", "2.0"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {result.parent_run_id}
    assert set(runs[0].data.metrics) == set(runs[1].data.metrics)
    assert {k.split(".")[1] for k in runs[0].data.metrics} == {"claim", "doctor"}
    table = compare_runs("quickstart", "auprc", uri=uri)
    assert "rules" in table.columns
    assert set(table["point"]) == {"base=0.5", "base=2.0"}
    from typer.testing import CliRunner

    from medfraud.cli import app
    out = CliRunner().invoke(app, ["compare", "--experiment", "quickstart", "--uri", uri],
                             env={"COLUMNS": "240"})
    assert out.exit_code == 0, out.output
    assert "sweep point" in out.output and "base=0.5" in out.output and "base=2.0" in out.output
    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert "plots/sweep_base.png" in parent_artifacts


def test_window_features_and_rules_share_one_split(tiny_dataset, monkeypatch):
    """build_window_features splits the claims by patient once for the features and the
    rules, and gives what each gives splitting on its own."""
    import medfraud.dataset as dataset_module
    import medfraud.features.claims as claims_module
    import medfraud.partitions as partitions_module
    import medfraud.rules.engine as rules_engine
    from medfraud.config import load_experiment
    from medfraud.experiment import build_window_features
    from medfraud.features import build_features
    from medfraud.rules import evaluate_rules, load_catalogue

    for module in (claims_module, partitions_module, rules_engine):
        monkeypatch.setattr(module, "CLAIMS_PER_PARTITION", 1_000)
    spills = []
    original = dataset_module.spill_partitions
    monkeypatch.setattr(partitions_module, "spill_partitions",
                        lambda *args: spills.append(args[1]) or original(*args))
    config = load_experiment(REPO / "experiments/quickstart.yaml")
    window = (date(2024, 3, 1), date(2024, 6, 30))  # the tiny preset ends on 2024-06-30
    catalogue = load_catalogue()
    shared = build_window_features(config, tiny_dataset, window, catalogue=catalogue)
    assert len(spills) == 1
    alone = build_features(tiny_dataset, window, levels=tuple(config.features.levels))
    for level, frame in alone.frames.items():
        assert_frame_equal(shared.frames[level], frame, check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)
    assert_frame_equal(shared.rule_hits, evaluate_rules(tiny_dataset, catalogue, window=window))


def test_window_partitions_reach_the_latest_window_end(tiny_dataset, monkeypatch):
    """The experiment's one split serves both windows: from the first claim (the rules'
    history) to the later end; an open window (None) splits everything."""
    import medfraud.partitions as partitions_module
    from medfraud.experiment import window_partitions

    monkeypatch.setattr(partitions_module, "CLAIMS_PER_PARTITION", 1_000)
    train, test = (date(2024, 1, 1), date(2024, 3, 31)), (date(2024, 4, 1), date(2024, 5, 31))
    with window_partitions(tiny_dataset, train, test) as parts:
        assert (parts.start, parts.end) == (None, test[1])
        assert parts.covers(None, train[1]) and parts.covers(*test)
        last = max(part["claims"].select(pl.col("service_date").max()).collect().item()
                   for part in parts.parts)
        assert last == date(2024, 5, 31)
    with window_partitions(tiny_dataset, train, None) as parts:
        assert parts.end is None
