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
    # the claims search: one candidate per ring, with its patients, doctors and pharmacy
    assert det.candidates_ and all(c.relation is None for c in det.candidates_)
    assert all(set(c.members) == {"patient", "doctor", "pharmacy"} for c in det.candidates_)
    labels = Labels.from_dataset(tiny_dataset)
    for level, id_col in (("doctor", "doctor_id"), ("patient", "patient_id")):
        positives = labels.positives(level, "collusion_ring")[id_col]
        assert positives.len() > 0  # the tiny preset plants collusion rings
        out = scores[level].with_columns(pl.col("id").is_in(positives.implode()).alias("y"))
        # most flagged entities are ring members, and most ring members are flagged
        flagged = out.filter(pl.col("score") > 0)
        assert flagged.height and flagged["y"].mean() >= 0.75
        assert out.filter(pl.col("y"))["score"].gt(0).mean() >= 0.6
    reasons = scores["doctor"].filter(pl.col("score") > 0)["reasons"].to_list()
    assert all(r and r[0].startswith("ring_") and r[0].endswith("_claims") for r in reasons)
    back = detector_from_state(det.to_state())
    assert [c.meta for c in back.candidates_] == [c.meta for c in det.candidates_]
    assert back.score(features)["score"].to_list() == scores["pharmacy"]["score"].to_list()


def test_ring_detector_relations_override_the_claims_search(tiny_dataset):
    features = FeatureSet(frames={}, columns={}, graph=build_claims_graph(tiny_dataset))
    det = make_detector("ring", level="doctor", relations=[["doctor", "treats", "patient"]])
    det.fit(features)
    assert det.candidates_
    assert {c.relation for c in det.candidates_} == {("doctor", "treats", "patient")}
    with pytest.raises(ValueError, match="unknown parameter"):
        make_detector("ring", level="doctor", quantil=0.9)
