import math

import numpy as np
import polars as pl
import pytest
from eval_toys import IDS, LABELS, make_labels, scores_frame
from sklearn.metrics import average_precision_score, roc_auc_score

from medfraud.evaluate.metrics import budget_name, evaluate_scores, metric_names


def test_perfect_ranking():
    m = evaluate_scores(scores_frame([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]), "claim", LABELS, pl.Series(IDS),
                        budgets=(0.1, 0.3))
    assert m["claim.all.auroc"] == 1.0 and m["claim.all.auprc"] == 1.0 and m["claim.all.rec_at_k"] == 1.0
    assert m["claim.upcoding.auprc"] == 1.0
    # top 10 % = 1 row, top 30 % = 3 rows
    assert m["claim.all.precision_at_10pct"] == 1.0 and m["claim.all.recall_at_10pct"] == pytest.approx(1 / 3)
    assert m["claim.all.precision_at_30pct"] == 1.0 and m["claim.all.recall_at_30pct"] == 1.0
    # duplicate_billing's only positive is third overall, but the two upcoding rows above it
    # are out of its scope (other fraud is not a false alarm), so it is first among its own
    assert m["claim.duplicate_billing.recall_at_10pct"] == 1.0
    assert m["claim.duplicate_billing.auprc"] == 1.0
    assert m["claim.duplicate_billing.auroc"] == 1.0


def test_reversed_ranking_is_low():
    m = evaluate_scores(scores_frame(np.arange(10)), "claim", LABELS, pl.Series(IDS))
    assert m["claim.all.auroc"] == 0.0
    assert m["claim.all.auprc"] < 0.4
    assert m["claim.all.rec_at_k"] == 0.0


def test_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    s = rng.random(10)
    m = evaluate_scores(scores_frame(s), "claim", LABELS, pl.Series(IDS))
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert m["claim.all.auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["claim.all.auprc"] == pytest.approx(average_precision_score(y, s))


def test_money_at_budget_on_ten_rows():
    amounts = pl.DataFrame({"id": IDS, "amount": [100.0, 300.0, 600.0, 1, 1, 1, 1, 1, 1, 1]})
    # C1 (300) ranked first, then a normal claim, then C2 (600), C0 (100) last.
    s = [0, 10, 8, 9, 5, 5, 5, 5, 5, 5]
    m = evaluate_scores(scores_frame(s), "claim", LABELS, pl.Series(IDS), budgets=(0.1, 0.3),
                        amounts=amounts)
    assert m["claim.all.money_at_10pct"] == pytest.approx(300 / 1000)
    assert m["claim.all.money_at_30pct"] == pytest.approx(900 / 1000)
    assert m["claim.upcoding.money_at_30pct"] == pytest.approx(300 / 400)
    assert m["claim.duplicate_billing.money_at_30pct"] == pytest.approx(1.0)


def test_keys_fixed_and_nan_without_positives_in_scope():
    scope = pl.Series(IDS[3:])  # no positive in scope
    m = evaluate_scores(scores_frame(np.arange(10)), "claim", LABELS, scope)
    full = evaluate_scores(scores_frame(np.arange(10)), "claim", LABELS, pl.Series(IDS))
    assert m.keys() == full.keys()
    assert all(math.isnan(v) for v in m.values())
    # every claim-level typology is reported, with or without positives
    typologies = {k.split(".")[1] for k in full}
    assert {"all", "upcoding", "duplicate_billing", "ghost_bed", "doctor_absent"} <= typologies
    assert math.isnan(full["claim.ghost_bed.auprc"])
    assert len(full) == len(typologies) * len(metric_names((0.01, 0.05)))
    assert math.isnan(full["claim.all.money_at_1pct"])  # no amounts given


def test_scope_restricts_rows_and_missing_scores_rank_last():
    scores = scores_frame([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]).filter(pl.col("id") != "C0")
    m = evaluate_scores(scores, "claim", LABELS, pl.Series(IDS), typologies=["upcoding"])
    # C0 has no score: it is ranked below every scored row
    assert m["claim.upcoding.auroc"] == pytest.approx((8 + 0) / (2 * 8))
    assert set(k.split(".")[1] for k in m) == {"all", "upcoding"}


def test_entity_level_uses_entity_labels():
    labels = make_labels(entities=[("doctor", "D1", "collusion_ring"), ("doctor", "D2", "collusion_ring"),
                                   ("patient", "P1", "phantom_patient")])
    ids = [f"D{i}" for i in range(20)]
    s = pl.DataFrame({"id": ids, "score": [0.0, 5.0, 4.0] + [1.0] * 17})
    m = evaluate_scores(s, "doctor", labels, pl.Series(ids))
    assert m["doctor.collusion_ring.auprc"] == 1.0
    assert "doctor.phantom_patient.auprc" not in m


def test_bad_input():
    with pytest.raises(KeyError, match="score"):
        evaluate_scores(pl.DataFrame({"id": IDS}), "claim", LABELS, pl.Series(IDS))
    dup = pl.DataFrame({"id": ["C0", "C0"], "score": [1.0, 2.0]})
    with pytest.raises(ValueError, match="duplicated id.*C0"):
        evaluate_scores(dup, "claim", LABELS, pl.Series(IDS))
    with pytest.raises(ValueError, match="level"):
        evaluate_scores(scores_frame(np.arange(10)), "ring", LABELS, pl.Series(IDS))
    with pytest.raises(ValueError, match="budget"):
        budget_name(0.0)
    assert budget_name(0.005) == "0.5pct" and budget_name(0.05) == "5pct"
