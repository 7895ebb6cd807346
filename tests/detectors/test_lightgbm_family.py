import json

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from detector_testkit import auroc, build_planted

from medfraud.detectors import SCORE_SCHEMA, NotFittedError, detector_from_state, make_detector
from medfraud.detectors.lightgbm_family import LightGBMDetector
from medfraud.features.frameset import FeatureSet

LEVELS = ["claim", "patient", "doctor", "pharmacy", "facility"]
# Small and single-threaded: the test machine's cores are shared.
FAST = {"min_child_samples": 5, "n_estimators": 100, "early_stopping_rounds": 20, "num_threads": 1}


def _fit(planted, level="claim", **params):
    params = {**FAST, "seed": 11, **params}
    return LightGBMDetector(level, **params).fit(planted.features, planted.labels)


@pytest.mark.parametrize("level", LEVELS)
def test_supervised_ranks_planted_rows_first(planted, level):
    det = _fit(planted, level)
    scores = det.score(planted.features)
    assert scores.schema == pl.Schema(SCORE_SCHEMA)
    assert scores["id"].to_list() == planted.features.ids(level).to_list()
    assert auroc(scores, planted.planted[level]) > 0.9
    assert ((scores["score"] >= 0) & (scores["score"] <= 1)).all()


@pytest.mark.parametrize("level", ["claim", "patient", "doctor"])
def test_pu_mode_learns_from_audited_rows_only(planted, level):
    det = _fit(planted, level, mode="pu")
    assert 0 < det.label_frequency_ <= 1
    scores = det.score(planted.features)
    assert auroc(scores, planted.planted[level]) > 0.9
    # The PU score is g(x) / c, a rescaled classifier probability.
    raw = det.booster_.predict(planted.features.matrix(level, det.columns_))
    np.testing.assert_allclose(scores["score"].to_numpy(), raw / det.label_frequency_)


def test_pu_mode_ignores_full_labels(planted):
    from medfraud.labels import Labels

    # Same audit table, no full labels: PU training must not change.
    empty_claims = planted.labels.claims.clear()
    blind = Labels(empty_claims, planted.labels.entities.clear(), planted.labels.audited)
    a = LightGBMDetector("claim", mode="pu", **FAST).fit(planted.features, planted.labels)
    b = LightGBMDetector("claim", mode="pu", **FAST).fit(planted.features, blind)
    assert a.score(planted.features).equals(b.score(planted.features))


def test_deterministic_with_same_seed(planted):
    a = _fit(planted, "doctor", feature_fraction=0.7, bagging_fraction=0.8).score(planted.features)
    b = _fit(planted, "doctor", feature_fraction=0.7, bagging_fraction=0.8).score(planted.features)
    assert a.equals(b)


def test_state_round_trip_is_lightgbm_text(planted):
    det = _fit(planted, "claim", mode="pu")
    state = json.loads(json.dumps(det.to_state()))
    assert state["model"].startswith("tree")
    assert lgb.Booster(model_str=state["model"]).num_trees() == det.best_iteration_
    rebuilt = detector_from_state(state)
    assert isinstance(rebuilt, LightGBMDetector)
    assert rebuilt.score(planted.features).equals(det.score(planted.features))


def test_feature_importance_and_reasons_point_at_planted_features(planted):
    det = _fit(planted, "claim")
    importance = det.feature_importance()
    assert importance.columns == ["feature", "gain"] and importance.height == 6
    assert set(importance["feature"][:1]) <= {"cl_f0", "cl_f1", "cl_f2"}
    scores = det.score(planted.features).filter(pl.col("id").is_in(list(planted.planted["claim"])))
    first = scores["reasons"].list.first()
    assert first.is_in(["cl_f0", "cl_f1", "cl_f2"]).mean() > 0.9


def test_typology_target(planted):
    det = _fit(planted, "doctor", typology="collusion_ring")
    assert auroc(det.score(planted.features), planted.planted["doctor"]) > 0.9
    with pytest.raises(ValueError, match="positives"):
        _fit(planted, "doctor", typology="ghost_bed")


def test_errors(planted):
    with pytest.raises(NotFittedError):
        LightGBMDetector("claim").score(planted.features)
    with pytest.raises(ValueError, match="needs labels"):
        LightGBMDetector("claim").fit(planted.features)
    with pytest.raises(ValueError, match="mode"):
        make_detector("lightgbm", mode="semi")


def test_scores_other_feature_sets():
    train, other = build_planted(0), build_planted(2)
    det = LightGBMDetector("patient", **FAST).fit(train.features, train.labels)
    assert auroc(det.score(other.features), other.planted["patient"]) > 0.9


def test_reasons_above_the_fitted_threshold_only(planted):
    part = _fit(planted, "claim", explain=0.05)
    full = LightGBMDetector.from_state({**part.to_state(), "explain_threshold": None})
    a, b = part.score(planted.features), full.score(planted.features)
    assert a["score"].equals(b["score"])
    # The threshold is the training scores' 95 % quantile: about 5 % of the training rows.
    explained = a["score"].to_numpy() >= part.explain_threshold_
    assert 0.03 <= explained.mean() <= 0.08
    assert a["reasons"].filter(pl.Series(~explained)).list.len().max() == 0
    assert a["reasons"].filter(pl.Series(explained)).to_list() == b["reasons"].filter(pl.Series(explained)).to_list()
    assert b["reasons"].list.len().sum() > a["reasons"].list.len().sum()


def test_reasons_do_not_depend_on_the_other_rows_of_a_call(planted):
    """Scoring a subset gives its rows the reasons they get in the whole call."""
    part = _fit(planted, "claim", explain=0.05)
    whole = part.score(planted.features)
    top = whole.sort("score", descending=True).head(20)["id"]
    subset = FeatureSet({"claim": planted.features.frame("claim").filter(pl.col("claim_id").is_in(top.implode()))},
                        {"claim": planted.features.columns["claim"]})
    alone = part.score(subset)
    expected = whole.filter(pl.col("id").is_in(top.implode())).sort("id")
    assert alone.sort("id")["reasons"].to_list() == expected["reasons"].to_list()
    assert alone["reasons"].list.len().min() > 0


def _depth(node: dict) -> int:
    if "leaf_index" in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


def test_max_depth_bounds_every_tree(planted):
    free = _fit(planted, "claim", num_leaves=31)
    bounded = _fit(planted, "claim", num_leaves=31, max_depth=3)
    depths = [_depth(t["tree_structure"]) for t in bounded.booster_.dump_model()["tree_info"]]
    assert max(depths) <= 3
    assert max(_depth(t["tree_structure"]) for t in free.booster_.dump_model()["tree_info"]) > 3
    assert auroc(bounded.score(planted.features), planted.planted["claim"]) > 0.9
    assert detector_from_state(json.loads(json.dumps(bounded.to_state()))).params["max_depth"] == 3


def test_scores_are_lightgbm_probabilities_for_batches_and_single_rows(planted):
    det = _fit(planted, "claim", num_threads=2)
    det.prepare_scoring()  # builds the predictor used below
    assert det._predictor.fast
    X = planted.features.matrix("claim", det.columns_)
    scores = det.score(planted.features)
    np.testing.assert_allclose(scores["score"].to_numpy(), det.booster_.predict(X), rtol=0, atol=1e-12)
    one = FeatureSet({"claim": planted.features.frame("claim").head(1)}, {"claim": planted.features.columns["claim"]})
    np.testing.assert_allclose(det.score(one)["score"].to_numpy(), det.booster_.predict(X[:1]), rtol=0, atol=1e-12)
