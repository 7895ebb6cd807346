import numpy as np
import polars as pl
import pytest
from graph_testkit_detectors import planted_graph

from medfraud.detectors import detector_from_state, make_detector
from medfraud.features.frameset import FeatureSet
from medfraud.graph import build_claims_graph, ring_recovery
from medfraud.labels import Labels


@pytest.fixture(scope="module")
def graph_features(tmp_path_factory) -> FeatureSet:
    return planted_graph(tmp_path_factory.mktemp("ring") / "g", seed=2)


def test_ring_detector_on_generic_graph(graph_features):
    det = make_detector("ring", level="patient", node_type="user",
                        relations=[["user", "reviews", "item"]])
    det.fit(graph_features)
    report = ring_recovery(det.candidates_, graph_features.graph.meta["rings"])
    assert report["recall"] == 1.0 and min(report["per_ring"].values()) >= 0.8
    out = det.score(graph_features)
    y = graph_features.graph.labels["user"].to_numpy()
    flagged = out["score"].to_numpy() > 0
    assert flagged[y == 1].mean() > 0.9 and flagged[y == 0].mean() < 0.02
    reasons = out.filter(pl.col("score") > 0)["reasons"].to_list()
    assert all(r and r[0].startswith("ring_") for r in reasons)
    assert out.filter(pl.col("score") == 0)["reasons"].list.len().max() == 0
    back = detector_from_state(det.to_state())
    assert back.score(graph_features)["score"].to_list() == out["score"].to_list()


def test_ring_detector_needs_a_graph_and_relations(graph_features):
    with pytest.raises(ValueError, match="features.graph is None"):
        make_detector("ring", level="doctor").fit(FeatureSet(frames={}, columns={}))
    with pytest.raises(ValueError, match="not in the graph"):
        make_detector("ring", level="patient", node_type="user").fit(graph_features)


def test_ring_detector_on_tiny_claims_graph(tiny_dataset):
    graph = build_claims_graph(tiny_dataset)
    features = FeatureSet(frames={}, columns={}, graph=graph)
    scores = {}
    for level in ("doctor", "patient", "pharmacy"):
        det = make_detector("ring", level=level).fit(features)
        out = det.score(features)
        assert out.height == graph.num_nodes(level)
        assert out["score"].min() >= 0 and np.isfinite(out["score"].to_numpy()).all()
        scores[level] = out
    relations = {c.relation[1] for c in det.candidates_}
    assert relations <= {"treats", "prescribes_to"} and det.candidates_
    labels = Labels.from_dataset(tiny_dataset)
    ring_doctors = labels.positives("doctor", "collusion_ring")["doctor_id"]
    assert ring_doctors.len() > 0  # the tiny preset plants collusion rings
    doctors = scores["doctor"].with_columns(pl.col("id").is_in(ring_doctors.implode()).alias("y"))
    # ring doctors sit in denser blocks than the others, on average
    mean = doctors.group_by("y").agg(pl.col("score").mean()).sort("y")["score"].to_list()
    assert mean[1] > mean[0]
