import json
import math

import numpy as np
import polars as pl
import pytest
from detector_testkit import auroc, build_planted

from medfraud.detectors import SCORE_SCHEMA, NotFittedError, detector_from_state, make_detector
from medfraud.detectors.rules import RulesDetector


def _hits(rows):
    return pl.DataFrame(rows, schema={"level": pl.String, "id": pl.String, "rule_id": pl.String,
                                      "reason_code": pl.String, "severity": pl.String,
                                      "amount_at_stake": pl.Float64}, orient="row")


@pytest.fixture
def with_hits():
    planted = build_planted(0)
    claims = planted.features.frame("claim")
    rng = np.random.default_rng(4)
    # Each planted claim breaks two rules with large money; a few normal claims break a
    # low-severity rule with little money.
    planted_ids = sorted(planted.planted["claim"])
    normal_ids = [i for i in claims["claim_id"].to_list() if i not in planted.planted["claim"]]
    rows = [("claim", c, "R_DUP", "DUPLICATE_CHARGE", "high", 5000.0) for c in planted_ids]
    rows += [("claim", c, "R_QTY", "QTY_OVER_LIMIT", "medium", 800.0) for c in planted_ids]
    rows += [("claim", c, "R_FREQ", "FREQUENCY", "low", 10.0)
             for c in rng.choice(normal_ids, 60, replace=False).tolist()]
    rows += [("doctor", "D00007", "R_ABSENT", "DOCTOR_OFF_DUTY", "high", None)]
    planted.features.rule_hits = _hits(rows)
    return planted


def test_claim_scores_and_reasons(with_hits):
    features = with_hits.features
    scores = make_detector("rules", level="claim").fit(features).score(features)
    assert scores.schema == pl.Schema(SCORE_SCHEMA)
    assert scores["id"].to_list() == features.ids("claim").to_list()
    assert auroc(scores, with_hits.planted["claim"]) > 0.99
    top = scores.filter(pl.col("id") == sorted(with_hits.planted["claim"])[0]).row(0, named=True)
    expected = 4.0 * (math.log1p(5000.0) + 1.0) + 2.0 * (math.log1p(800.0) + 1.0)
    assert top["score"] == pytest.approx(expected)
    assert top["reasons"] == ["DUPLICATE_CHARGE", "QTY_OVER_LIMIT"]  # ordered by contribution
    assert (scores.filter(pl.col("reasons").list.len() == 0)["score"] == 0).all()


def test_claim_hits_roll_up_to_entities(with_hits):
    features = with_hits.features
    claims = features.frame("claim")
    scores = RulesDetector("doctor").fit(features).score(features)
    claim_scores = RulesDetector("claim").fit(features).score(features)
    expected = (claims.select("claim_id", "doctor_id")
                .join(claim_scores.rename({"id": "claim_id"}), on="claim_id")
                .group_by("doctor_id").agg(pl.col("score").sum()))
    got = scores.join(expected.rename({"doctor_id": "id", "score": "expected"}), on="id", how="left")
    own = 4.0 * 1.0  # D00007's own hit: high severity, no money
    got = got.with_columns(pl.col("expected").fill_null(0.0)
                           + pl.when(pl.col("id") == "D00007").then(own).otherwise(0.0))
    np.testing.assert_allclose(got["score"].to_numpy(), got["expected"].to_numpy())
    assert "DOCTOR_OFF_DUTY" in scores.filter(pl.col("id") == "D00007")["reasons"][0].to_list()


@pytest.mark.parametrize("level", ["patient", "pharmacy", "facility"])
def test_other_levels(with_hits, level):
    scores = RulesDetector(level).fit(with_hits.features).score(with_hits.features)
    assert scores.schema == pl.Schema(SCORE_SCHEMA)
    assert scores.height == with_hits.features.frame(level).height
    assert scores["score"].sum() > 0


def test_numeric_severity_is_its_own_weight(with_hits):
    features = with_hits.features
    features.rule_hits = _hits([("claim", "C00001", "R1", "X", "high", 0.0)]).with_columns(
        pl.lit(3, pl.Int8).alias("severity"))
    scores = RulesDetector("claim", base=1.0).fit(features).score(features)
    assert scores.filter(pl.col("id") == "C00001")["score"][0] == pytest.approx(3.0)


def test_errors(with_hits):
    features = with_hits.features
    with pytest.raises(NotFittedError):
        RulesDetector("claim").score(features)
    features.rule_hits = _hits([("claim", "C00001", "R1", "X", "catastrophic", 1.0)])
    with pytest.raises(ValueError, match="catastrophic"):
        RulesDetector("claim").fit(features).score(features)
    features.rule_hits = features.rule_hits.drop("amount_at_stake")
    with pytest.raises(KeyError, match="amount_at_stake"):
        RulesDetector("claim").fit(features).score(features)
    features.rule_hits = None
    with pytest.raises(ValueError, match="rule_hits is None"):
        RulesDetector("claim").fit(features).score(features)


def test_state_round_trip(with_hits):
    det = RulesDetector("patient", severity_weights={"high": 10.0, "medium": 1.0, "low": 0.1}).fit(
        with_hits.features)
    rebuilt = detector_from_state(json.loads(json.dumps(det.to_state())))
    assert rebuilt.score(with_hits.features).equals(det.score(with_hits.features))
