import json

import numpy as np
import polars as pl
import pytest
from detector_testkit import auroc, build_planted

from medfraud.detectors import SCORE_SCHEMA, NotFittedError, detector_from_state, make_detector
from medfraud.detectors.pyod_family import PyODDetector

LEVELS = ["claim", "patient", "doctor", "pharmacy", "facility"]
MODELS = ["IForest", "ECOD", "COPOD", "HBOS"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("level", LEVELS)
def test_ranks_planted_rows_first(planted, model, level):
    det = make_detector("pyod", level=level, model=model, seed=3).fit(planted.features)
    scores = det.score(planted.features)
    assert scores.schema == pl.Schema(SCORE_SCHEMA)
    assert scores["id"].to_list() == planted.features.ids(level).to_list()
    assert auroc(scores, planted.planted[level]) > 0.9


@pytest.mark.parametrize("model", MODELS)
def test_state_round_trip_gives_identical_scores(planted, model):
    det = PyODDetector("claim", model=model, seed=1).fit(planted.features)
    state = json.loads(json.dumps(det.to_state()))  # must survive JSON
    rebuilt = detector_from_state(state)
    assert rebuilt.score(planted.features).equals(det.score(planted.features))


@pytest.mark.parametrize("model", ["IForest", "ECOD", "LOF"])
def test_same_seed_same_scores_and_different_seed_differs(planted, model):
    a = PyODDetector("doctor", model=model, seed=5).fit(planted.features).score(planted.features)
    b = PyODDetector("doctor", model=model, seed=5).fit(planted.features).score(planted.features)
    assert a.equals(b)
    if model == "IForest":
        c = PyODDetector("doctor", model=model, seed=6).fit(planted.features).score(planted.features)
        assert not np.allclose(a["score"].to_numpy(), c["score"].to_numpy())


def test_iforest_scores_equal_pyods_own(planted):
    det = PyODDetector("claim", model="IForest", seed=2, params={"n_estimators": 50}).fit(planted.features)
    Z = det.scaler_.transform(planted.features.matrix("claim", det.columns_))
    np.testing.assert_allclose(det.decision_function(Z), det.model_.decision_function(Z), rtol=0, atol=1e-12)


@pytest.mark.parametrize("model", ["ECOD", "COPOD"])
def test_score_of_a_row_does_not_depend_on_its_batch(planted, model):
    # PyOD issue #401: PyOD's ECOD/COPOD mix the scored batch into the ECDF.
    det = PyODDetector("claim", model=model).fit(planted.features)
    Z = det.scaler_.transform(planted.features.matrix("claim", det.columns_))
    full = det.decision_function(Z)
    np.testing.assert_array_equal(det.decision_function(Z[:7]), full[:7])
    np.testing.assert_array_equal(det.decision_function(np.repeat(Z[:1], 50, axis=0))[0], full[0])


def test_reasons_name_the_planted_features(planted):
    det = PyODDetector("claim", model="IForest").fit(planted.features)
    scores = det.score(planted.features)
    top = scores.filter(pl.col("id").is_in(list(planted.planted["claim"])))
    # the planted rows were shifted on features 0-2
    hits = top["reasons"].list.eval(pl.element().is_in(["cl_f0", "cl_f1", "cl_f2"])).list.sum()
    assert (hits >= 2).mean() > 0.8
    assert scores["reasons"].list.len().max() <= 3


def test_score_before_fit_raises(planted):
    with pytest.raises(NotFittedError):
        PyODDetector("claim").score(planted.features)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="IForest.*") as err:
        PyODDetector("claim", model="IsolationJungle")
    assert "ECOD" in str(err.value) and "IsolationJungle" in str(err.value)


def test_non_exportable_model_says_so(planted):
    det = PyODDetector("pharmacy", model="KNN").fit(planted.features)
    assert det.score(planted.features).height == planted.features.frame("pharmacy").height
    with pytest.raises(NotImplementedError, match="IForest"):
        det.to_state()


def test_missing_values_are_imputed_and_scores_finite(planted):
    assert np.isnan(planted.features.matrix("claim")).any()
    scores = PyODDetector("claim", model="HBOS").fit(planted.features).score(planted.features)
    assert np.isfinite(scores["score"].to_numpy()).all()


def test_scoring_new_data_uses_training_state_only():
    train, other = build_planted(0), build_planted(1)
    det = PyODDetector("patient", model="ECOD").fit(train.features)
    scores = det.score(other.features)
    assert auroc(scores, other.planted["patient"]) > 0.9


def test_reasons_only_above_the_fitted_threshold_and_independent_of_the_batch(planted):
    from medfraud.detectors.pyod_family import PyODDetector

    features = planted.features
    det = PyODDetector("claim", model="IForest", explain=0.1, seed=0).fit(features)
    scored = det.score(features)
    explained = scored.filter(pl.col("reasons").list.len() > 0)
    assert 0 < explained.height <= 0.12 * scored.height
    assert explained["score"].min() >= scored.filter(pl.col("reasons").list.len() == 0)["score"].max()
    # one row alone gets the same reasons as in the full batch
    top = scored.sort("score", descending=True).row(0, named=True)
    alone = type(features)({"claim": features.frame("claim").filter(pl.col("claim_id") == top["id"])},
                           features.columns)
    assert det.score(alone)["reasons"][0].to_list() == top["reasons"]
    restored = PyODDetector.from_state(det.to_state())
    assert restored.score(features)["reasons"].to_list() == scored["reasons"].to_list()
