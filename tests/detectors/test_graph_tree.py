import numpy as np
import pytest
import scipy.sparse as sp
from graph_testkit_detectors import planted_graph
from sklearn.metrics import average_precision_score, roc_auc_score

from medfraud.detectors import detector_from_state, make_detector
from medfraud.detectors.graph_tree import GraphTreeDetector, neighbour_features, sparse_max
from medfraud.features.frameset import FeatureSet


@pytest.fixture(scope="module")
def graph_features(tmp_path_factory) -> FeatureSet:
    return planted_graph(tmp_path_factory.mktemp("gt") / "g", seed=1)


def test_sparse_max_matches_dense():
    adj = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [0, 1, 1]], dtype=float))
    values = np.array([[1.0, -5.0], [7.0, 2.0], [3.0, -1.0]])
    np.testing.assert_array_equal(sparse_max(adj, values), [[3.0, -1.0], [0.0, 0.0], [7.0, 2.0]])


def test_neighbour_features_shapes(graph_features):
    X, names = neighbour_features(graph_features.graph, "user", hops=2)
    g = graph_features.graph
    d_user, d_item = len(g.feature_names["user"]), len(g.feature_names["item"])
    # self + (mean, max) of item features + (mean, max) of the items' 1-hop user means
    assert X.shape == (800, d_user + 2 * d_item + 2 * d_user) and len(names) == X.shape[1]
    X1, _ = neighbour_features(g, "user", hops=1)
    assert X1.shape[1] == d_user + 2 * d_item
    # the 1-hop mean equals a direct average over each user's items
    adj = g.adjacency(("user", "reviews", "item"))
    x_item = g.data["item"].x.double().numpy()
    row = 5
    items = adj[row].indices
    np.testing.assert_allclose(X[row, d_user:d_user + d_item], x_item[items].mean(axis=0))


def test_graph_tree_beats_random_with_reasons(graph_features):
    det = make_detector("graph_tree", level="patient", node_type="user", n_estimators=60, seed=0)
    det.fit(graph_features)
    out = det.score(graph_features)
    y = graph_features.graph.labels["user"].to_numpy()
    s = out["score"].to_numpy()
    assert average_precision_score(y, s) > 2 * y.mean() and roc_auc_score(y, s) > 0.8
    top = out.sort("score", descending=True).head(5)
    assert all(1 <= len(r) <= 3 for r in top["reasons"].to_list())
    back = detector_from_state(det.to_state())
    np.testing.assert_allclose(back.score(graph_features)["score"].to_numpy(), s)


def test_graph_tree_needs_labels(graph_features):
    from dataclasses import replace
    unlabelled = FeatureSet(frames={}, columns={}, graph=replace(graph_features.graph, labels={}))
    with pytest.raises(ValueError, match="supervised"):
        GraphTreeDetector(level="patient", node_type="user").fit(unlabelled)
