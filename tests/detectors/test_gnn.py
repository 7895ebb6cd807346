from dataclasses import replace

import numpy as np
import pytest
import torch
from graph_testkit_detectors import planted_graph
from sklearn.metrics import average_precision_score

from medfraud.detectors import detector_from_state, make_detector
from medfraud.detectors.gnn import GNNDetector
from medfraud.features.frameset import FeatureSet
from medfraud.graph.models import beta_wavelet_coefficients

FAST = {"epochs": 40, "hidden": 16, "patience": 15}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # small graphs: one thread is as fast and immune to the other test workers' load
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def graph_features(tmp_path_factory) -> FeatureSet:
    return planted_graph(tmp_path_factory.mktemp("gnn") / "g")


def _auprc(features: FeatureSet, scores) -> tuple[float, float]:
    y = features.graph.labels["user"].to_numpy()
    s = scores.sort("id")["score"].to_numpy()
    assert scores.sort("id")["id"].to_list() == features.graph.node_ids["user"].to_list()
    return average_precision_score(y, s), y.mean()


@pytest.mark.parametrize("arch", ["sage", "bwgnn", "dominant"])
def test_gnn_beats_random(graph_features, arch):
    det = make_detector("gnn", level="patient", node_type="user", arch=arch, seed=0, **FAST)
    det.fit(graph_features)
    out = det.score(graph_features)
    assert out.columns == ["id", "score", "reasons"] and out.height == 800
    assert np.isfinite(out["score"].to_numpy()).all()
    auprc, prevalence = _auprc(graph_features, out)
    assert auprc > 2 * prevalence, (arch, auprc, prevalence)


def test_same_seed_same_scores_and_state_round_trip(graph_features):
    params = dict(level="patient", node_type="user", arch="sage", seed=3, **FAST)
    a = GNNDetector(**params).fit(graph_features).score(graph_features)
    fitted = GNNDetector(**params).fit(graph_features)
    b = fitted.score(graph_features)
    assert a["score"].to_list() == b["score"].to_list()
    state = fitted.to_state()
    assert isinstance(state["state_dict"], bytes) and isinstance(state["params"], str)
    back = detector_from_state(state)
    assert back.score(graph_features)["score"].to_list() == b["score"].to_list()
    other = GNNDetector(**{**params, "seed": 4}).fit(graph_features).score(graph_features)
    assert other["score"].to_list() != b["score"].to_list()


def test_bwgnn_state_round_trip(graph_features):
    det = GNNDetector(level="patient", node_type="user", arch="bwgnn", seed=1, epochs=5)
    det.fit(graph_features)
    back = GNNDetector.from_state(det.to_state())
    np.testing.assert_array_equal(back.score(graph_features)["score"].to_numpy(),
                                  det.score(graph_features)["score"].to_numpy())
    assert det.history_ and "val_auprc" in det.history_[0]


def test_errors(graph_features):
    with pytest.raises(ValueError, match="features.graph is None"):
        GNNDetector(level="patient").fit(FeatureSet(frames={}, columns={}))
    with pytest.raises(ValueError, match="arch must be one of"):
        GNNDetector(arch="gat")
    with pytest.raises(ValueError, match="unknown parameter"):
        GNNDetector(epoch=3)
    with pytest.raises(KeyError, match="no node type 'doctor'"):
        GNNDetector(level="doctor", arch="sage").fit(graph_features)
    unlabelled = FeatureSet(frames={}, columns={}, graph=replace(graph_features.graph, labels={}))
    with pytest.raises(ValueError, match="no labels exist for node type 'user'.*dominant"):
        GNNDetector(level="patient", node_type="user", arch="sage", epochs=2).fit(unlabelled)
    # the unsupervised architecture needs none
    GNNDetector(level="patient", node_type="user", arch="dominant", epochs=2).fit(unlabelled)
    fitted = GNNDetector(level="patient", node_type="user", arch="bwgnn", epochs=2)
    fitted.fit(graph_features)
    smaller = replace(graph_features.graph, feature_names={})
    smaller.data = smaller.data.clone()
    smaller.data["user"].x = smaller.data["user"].x[:, :2]
    with pytest.raises(ValueError, match="does not match the fitted model"):
        fitted.score(FeatureSet(frames={}, columns={}, graph=smaller))


@pytest.mark.parametrize(("arch", "learns"), [("sage", True), ("bwgnn", True),
                                              ("dominant", False)])
def test_only_the_semi_supervised_architectures_learn_labels(arch, learns):
    # The stacked ensemble refits label-learning members out of fold; DOMINANT reads none.
    assert make_detector("gnn", level="doctor", arch=arch).learns_labels is learns


def test_beta_wavelets_partition_the_spectrum():
    coeffs = beta_wavelet_coefficients(3)
    lam = np.linspace(0, 2, 11)
    values = np.array([np.polynomial.polynomial.polyval(lam, c) for c in coeffs])
    assert (values >= -1e-12).all()
    assert values[0].argmax() == 0 and values[-1].argmax() == len(lam) - 1  # low- and high-pass


def test_nodes_outside_the_training_rows_are_unlabelled_not_negative(tiny_dataset):
    from medfraud.detectors.gnn import graph_target
    from medfraud.features import build_features
    from medfraud.graph import build_claims_graph
    from medfraud.labels import Labels

    features = build_features(tiny_dataset, levels=("doctor",))
    graph = build_claims_graph(tiny_dataset, features)
    labels = Labels.from_dataset(tiny_dataset)
    doctors = features.frame("doctor")
    train = FeatureSet({"doctor": doctors.head(doctors.height // 2)}, features.columns)
    y_all = graph_target(graph, "doctor", "doctor", labels, None, "full")
    y_train = graph_target(graph, "doctor", "doctor", labels, None, "full", train)
    in_train = graph.node_ids["doctor"].is_in(train.ids("doctor").implode()).to_numpy()
    assert np.isfinite(y_all).all()
    assert np.array_equal(y_train[in_train], y_all[in_train])
    assert np.isnan(y_train[~in_train]).all() and (~in_train).any()
