"""Every family of this package on the generated ``tiny`` dataset, end to end with metrics."""

import math

import numpy as np
import polars as pl
import pytest

from medfraud.detectors import SCORE_SCHEMA, make_detector
from medfraud.evaluate.metrics import evaluate_scores

FAST_LGB = {"n_estimators": 80, "early_stopping_rounds": 20, "num_threads": 1}


@pytest.fixture(scope="module")
def tiny(tiny_dataset):
    from medfraud.features import build_features
    from medfraud.labels import Labels
    from medfraud.rules.engine import evaluate_rules

    features = build_features(tiny_dataset)
    features.rule_hits = evaluate_rules(tiny_dataset)
    return features, Labels.from_dataset(tiny_dataset)


@pytest.mark.parametrize("level", ["claim", "patient", "doctor"])
def test_families_on_tiny(tiny, level):
    features, labels = tiny
    configs = {"rules": {}, "pyod": {"model": "IForest"}, "lightgbm": FAST_LGB,
               "ensemble": {"members": [{"family": "rules", "level": "claim"},
                                        {"family": "pyod", "level": level, "model": "ECOD"},
                                        {"family": "lightgbm", "level": level, **FAST_LGB}],
                            "method": "stacked"}}
    auprc = {}
    for family, params in configs.items():
        scores = make_detector(family, level=level, **params).fit(features, labels).score(features)
        assert scores.schema == pl.Schema(SCORE_SCHEMA)
        assert scores.height == features.frame(level).height
        metrics = evaluate_scores(scores, level, labels, features.ids(level),
                                  amounts=features.frame("claim").select(pl.col("claim_id").alias("id"),
                                                                         pl.col("fund_paid").alias("amount"))
                                  if level == "claim" else None)
        auprc[family] = metrics[f"{level}.all.auprc"]
        prevalence = labels.target(level, features.ids(level)).mean()
        assert not math.isnan(auprc[family])
        # every family must rank fraud above chance on its own training data
        assert auprc[family] > prevalence, (family, auprc[family], prevalence)
    assert auprc["lightgbm"] > 0.5


def test_stacked_ensemble_scores_graph_members_out_of_fold(tiny, tiny_dataset, monkeypatch):
    """A graph member of a stacked ensemble enters the regression with scores of copies that
    did not learn the scored rows' labels: each refit sees the labels of all but one fold
    of the training doctors, and each doctor is held out exactly once."""
    from medfraud.detectors.base import REGISTRY
    from medfraud.detectors.ensemble import STACKING_FOLDS, EnsembleDetector
    from medfraud.detectors.gnn import graph_target
    from medfraud.detectors.graph_tree import GraphTreeDetector
    from medfraud.features.frameset import FeatureSet
    from medfraud.graph.build import build_claims_graph

    features, labels = tiny
    features = FeatureSet(features.frames, features.columns, features.window,
                          features.rule_hits, build_claims_graph(tiny_dataset, features))
    labelled_by_fit: list[set[str]] = []

    class LabelSpy(GraphTreeDetector):
        family = "label_spy"

        def fit(self, features, labels=None):
            y = graph_target(features.graph, self.level, self.node_type, labels, None, "full",
                             features)
            ids = features.graph.node_ids[self.node_type].to_numpy()
            labelled_by_fit.append(set(ids[np.isfinite(y)]))
            return super().fit(features, labels)

    monkeypatch.setitem(REGISTRY, "label_spy", LabelSpy)
    det = EnsembleDetector("doctor", method="stacked", seed=2, members=[
        {"family": "label_spy", "level": "doctor", "n_estimators": 30, "seed": 0},
        {"family": "pyod", "level": "doctor", "model": "ECOD"}])
    det.fit(features, labels)

    doctors = set(features.ids("doctor").to_list())
    assert len(labelled_by_fit) == 1 + STACKING_FOLDS
    assert labelled_by_fit[0] == doctors  # the member itself: every training doctor
    held_out = [doctors - seen for seen in labelled_by_fit[1:]]
    assert all(seen < doctors for seen in labelled_by_fit[1:])
    assert sum(len(fold) for fold in held_out) == len(doctors)
    assert set().union(*held_out) == doctors
    # The stacker's column of the graph member comes from those copies, not the member.
    in_sample = det._ranks(det._member_table(features)[0])
    out_of_fold = det._stacking_ranks(features, labels, [m.score(features) for m in det.members_])
    graph_columns = [i for i, (member, _) in enumerate(det.columns_) if member == 0]
    other_columns = [i for i, (member, _) in enumerate(det.columns_) if member != 0]
    assert not np.allclose(in_sample[:, graph_columns], out_of_fold[:, graph_columns])
    np.testing.assert_array_equal(in_sample[:, other_columns], out_of_fold[:, other_columns])
