import json

import numpy as np
import polars as pl
import pytest
from detector_testkit import auroc, build_planted
from sklearn.metrics import roc_auc_score

from medfraud.detectors import SCORE_SCHEMA, NotFittedError, detector_from_state, make_detector
from medfraud.detectors.ensemble import EnsembleDetector, _ecdf_rank
from medfraud.detectors.pyod_family import PyODDetector
from medfraud.features.frameset import FeatureSet

FAST_LGB = {"family": "lightgbm", "min_child_samples": 5, "n_estimators": 60,
            "early_stopping_rounds": 15, "num_threads": 1}


def _members(level):
    return [{"family": "pyod", "level": level, "model": "IForest", "seed": 1},
            {"family": "pyod", "level": level, "model": "ECOD"},
            {**FAST_LGB, "level": level}]


@pytest.mark.parametrize("method", ["rank", "stacked"])
@pytest.mark.parametrize("level", ["claim", "patient", "doctor", "pharmacy"])
def test_same_level_members(planted, level, method):
    det = make_detector("ensemble", level=level, method=method, members=_members(level), seed=2)
    scores = det.fit(planted.features, planted.labels).score(planted.features)
    assert scores.schema == pl.Schema(SCORE_SCHEMA)
    assert scores["id"].to_list() == planted.features.ids(level).to_list()
    assert auroc(scores, planted.planted[level]) > 0.9
    assert scores["reasons"].list.len().max() <= 5
    if method == "rank":
        assert scores["score"].min() >= 0 and scores["score"].max() <= 1


def test_rank_average_is_mean_of_member_ranks(planted):
    a = PyODDetector("claim", model="IForest").fit(planted.features)
    b = PyODDetector("claim", model="HBOS").fit(planted.features)
    det = EnsembleDetector("claim", members=[a, b], weights=[3.0, 1.0]).fit(planted.features)
    scores = det.score(planted.features)["score"].to_numpy()
    ra = _ecdf_rank(a.score(planted.features)["score"].to_numpy(), det.grids_[0])
    rb = _ecdf_rank(b.score(planted.features)["score"].to_numpy(), det.grids_[1])
    np.testing.assert_allclose(scores, (3 * ra + rb) / 4)
    # ranks are against the training distribution: the top training row ranks near 1
    assert ra.max() == pytest.approx(1.0, abs=1e-3)


def test_claim_scores_roll_up_to_entities(planted):
    claim_member = PyODDetector("claim", model="IForest").fit(planted.features)
    det = EnsembleDetector("doctor", members=[claim_member]).fit(planted.features)
    table, columns = det._member_table(planted.features)
    assert columns == [(0, "max"), (0, "mean")]
    claim_scores = claim_member.score(planted.features)
    expected = (planted.features.frame("claim").select("claim_id", "doctor_id")
                .join(claim_scores.rename({"id": "claim_id"}), on="claim_id")
                .group_by("doctor_id").agg(pl.col("score").max().alias("mx"), pl.col("score").mean().alias("mn"))
                .rename({"doctor_id": "id"}))
    got = table.join(expected, on="id", how="inner")
    assert got.height > 0
    np.testing.assert_allclose(got["m0:max"].to_numpy(), got["mx"].to_numpy())
    np.testing.assert_allclose(got["m0:mean"].to_numpy(), got["mn"].to_numpy())
    # doctors without claims get nulls that rank 0, not an error
    no_claims = table.filter(pl.col("m0:max").is_null())["id"]
    scores = det.score(planted.features)
    assert (scores.filter(pl.col("id").is_in(no_claims.to_list()))["score"] == 0).all()


def test_entity_scores_push_down_to_claims(planted):
    doctor_member = PyODDetector("doctor", model="IForest").fit(planted.features)
    det = EnsembleDetector("claim", members=[doctor_member]).fit(planted.features)
    scores = det.score(planted.features)
    doctor_rank = (doctor_member.score(planted.features)
                   .rename({"id": "doctor_id", "score": "doctor_score", "reasons": "doctor_reasons"}))
    joined = (planted.features.frame("claim").select(pl.col("claim_id").alias("id"), "doctor_id")
              .join(scores, on="id").join(doctor_rank, on="doctor_id"))
    # a claim's score is a monotone function of its doctor's score, reasons are the doctor's
    order = np.argsort(joined["doctor_score"].to_numpy(), kind="stable")
    assert (np.diff(joined["score"].to_numpy()[order]) >= -1e-12).all()
    assert joined["reasons"].to_list() == joined["doctor_reasons"].to_list()


def test_cross_level_ensemble_finds_planted_claims(planted):
    members = [{"family": "pyod", "level": "claim", "model": "IForest"},
               {"family": "pyod", "level": "doctor", "model": "COPOD"}]
    det = EnsembleDetector("claim", members=members, method="stacked").fit(planted.features, planted.labels)
    assert det.member_weights_[0] > det.member_weights_[1]  # the claim member carries the signal
    assert auroc(det.score(planted.features), planted.planted["claim"]) > 0.95


@pytest.mark.parametrize("method", ["rank", "stacked"])
def test_state_round_trip_and_determinism(planted, method):
    members = [{"family": "pyod", "level": "claim", "model": "IForest"}, {**FAST_LGB, "level": "patient"}]
    det = EnsembleDetector("patient", members=members, method=method).fit(planted.features, planted.labels)
    again = EnsembleDetector("patient", members=members, method=method).fit(planted.features, planted.labels)
    scores = det.score(planted.features)
    assert scores.equals(again.score(planted.features))
    rebuilt = detector_from_state(json.loads(json.dumps(det.to_state())))
    assert rebuilt.score(planted.features).equals(scores)


def test_scores_do_not_depend_on_other_rows():
    train = build_planted(0)
    det = EnsembleDetector("claim", members=[{"family": "pyod", "level": "claim", "model": "ECOD"}]).fit(
        train.features)
    full = det.score(train.features)
    features = train.features
    small = type(features)({"claim": features.frame("claim").head(10)}, features.columns)
    assert det.score(small).equals(full.head(10))


def test_errors(planted):
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleDetector("claim", members=[])
    with pytest.raises(ValueError, match="method"):
        EnsembleDetector("claim", members=[{"family": "rules"}], method="vote")
    with pytest.raises(ValueError, match="needs labels"):
        EnsembleDetector("claim", members=[{"family": "pyod"}], method="stacked").fit(planted.features)
    with pytest.raises(TypeError, match="member 0"):
        EnsembleDetector("claim", members=["IForest"]).fit(planted.features)
    with pytest.raises(NotFittedError):
        EnsembleDetector("claim", members=[{"family": "pyod"}]).score(planted.features)


def test_reasons_are_union_ordered_by_member_weight(planted):
    features = planted.features
    hits = pl.DataFrame({"level": ["claim"], "id": ["C00005"], "rule_id": ["R1"], "reason_code": ["DUP"],
                         "severity": [4], "amount_at_stake": [100.0]})
    features_with_hits = type(features)(features.frames, features.columns, rule_hits=hits)
    rules = make_detector("rules", level="claim").fit(features_with_hits)
    forest = PyODDetector("claim", model="IForest", explain=1.0).fit(features_with_hits)
    forest_reasons = forest.score(features_with_hits).filter(pl.col("id") == "C00005")["reasons"][0].to_list()
    for weights, first in (([1.0, 3.0], forest_reasons[0]), ([3.0, 1.0], "DUP")):
        det = EnsembleDetector("claim", members=[rules, forest], weights=weights, n_reasons=10)
        row = det.fit(features_with_hits).score(features_with_hits).filter(pl.col("id") == "C00005")
        reasons = row["reasons"][0].to_list()
        assert reasons[0] == first
        assert sorted(reasons) == sorted(["DUP", *forest_reasons])


def test_stacking_does_not_reward_a_member_that_memorised_its_training_labels(planted):
    """A supervised member fitted on every training row has seen the labels of the
    stacker's validation rows; a tree grown to memorise them scores those rows perfectly
    there and nowhere else.  The stacker must judge it on rows it did not learn from: a
    member trained on pure noise gets (almost) no weight next to one that finds the signal."""
    rng = np.random.default_rng(3)
    claims = planted.features.frame("claim")
    noise = [f"noise_{i}" for i in range(5)]
    features = FeatureSet(
        {**planted.features.frames,
         "claim": claims.with_columns([pl.Series(c, rng.random(claims.height)) for c in noise])},
        {**planted.features.columns, "claim": planted.features.columns["claim"] + noise})
    memoriser = make_detector("lightgbm", level="claim", columns=noise, num_leaves=64,
                              min_child_samples=1, n_estimators=200, early_stopping_rounds=200,
                              learning_rate=0.3, num_threads=1, seed=1,
                              lgb_params={"min_sum_hessian_in_leaf": 1e-6})
    memoriser.fit(features, planted.labels)
    signal = PyODDetector("claim", model="ECOD").fit(features)
    det = EnsembleDetector("claim", members=[memoriser, signal], method="stacked", seed=2)
    det.fit(features, planted.labels)
    y = planted.labels.target("claim", features.ids("claim"), None, source="full").to_numpy()
    in_sample = memoriser.score(features)["score"].to_numpy()
    assert roc_auc_score(y, in_sample) > 0.85  # what the stacker must not see
    ranks = det._stacking_ranks(features, planted.labels,
                                [m.score(features) for m in det.members_])
    assert roc_auc_score(y, ranks[:, 0]) < 0.7  # out-of-fold: noise
    assert roc_auc_score(y, ranks[:, 1]) > 0.9
    assert det.member_weights_[0] < 0.25 * det.member_weights_[1]  # in-sample: 0.53
    assert auroc(det.score(features), planted.planted["claim"]) > 0.9
