"""Entity-level and inventory features on the toy dataset."""

from __future__ import annotations

from datetime import date

import pytest


def _row(features, level, entity_id):
    frame = features.frame(level)
    return frame.filter(features.ids(level) == entity_id).row(0, named=True)


def test_patient_aggregates(toy_features):
    p1 = _row(toy_features, "patient", "P1")
    assert p1["n_claims"] == 4
    assert p1["amount_sum"] == pytest.approx(380.0)
    assert p1["fund_share"] == pytest.approx(0.7)
    assert p1["max_facilities_one_day"] == 2
    assert p1["max_regions_one_day"] == 2
    assert p1["max_claims_one_pharmacy_month"] == 1
    # drug lines of P1: C1 x2, C2 x2, C9 x1; overlapping: one in C1, one G1 in C2, C9
    assert p1["refill_overlap_ratio"] == pytest.approx(3 / 5)
    assert p1["after_death_claims"] == 0
    assert _row(toy_features, "patient", "P2")["after_death_claims"] == 1
    # born 1980-01-01, first claim 2024-01-05
    expected_age = (date(2024, 1, 5) - date(1980, 1, 1)).days / 365.25
    assert p1["age_at_first_claim"] == pytest.approx(expected_age)


def test_monthly_aggregates(toy_features):
    d1 = _row(toy_features, "doctor", "D1")
    # D1: January C1, C2, C9; February C5, C6, C8
    assert d1["claims_month_max"] == 3
    assert d1["claims_month_mean"] == pytest.approx(3.0)
    assert d1["claims_month_std"] == pytest.approx(0.0)
    assert d1["n_months"] == 2
    assert d1["amount_month_max"] == pytest.approx(10000 + 12000 + 9000)
    p3 = _row(toy_features, "patient", "P3")
    assert p3["readmission_rate"] == pytest.approx(1 / 3)
    assert p3["drg_weight_mean"] == pytest.approx((1.5 + 2.5 + 1.0) / 3)


def test_pharmacy_inventory_balance(toy_features):
    r1 = _row(toy_features, "pharmacy", "R1")
    # R1 billed G1 15 (bought 10 opening + 5) and G2 1 (bought 4): nothing oversold
    assert r1["inv_drugs_oversold"] == 0
    assert r1["inv_max_oversold_ratio"] == 0
    assert r1["inv_billed_purchased_ratio"] == pytest.approx(16 / 19)
    r2 = _row(toy_features, "pharmacy", "R2")
    # R2 billed 3 G1 it never bought (its only purchase is G3)
    assert r2["inv_drugs_oversold"] == 1
    assert r2["inv_max_oversold_ratio"] == pytest.approx(3.0)
    assert r2["inv_never_purchased_value_share"] == pytest.approx(1.0)
    assert r2["price_mix_ratio"] == pytest.approx(10 / 5)  # billed G1 @10 vs bought G3 @5


def test_inventory_counts_only_up_to_window_end(toy_dataset):
    from datetime import date

    from medfraud.features import build_features

    # In a window ending Jan 7, R1 has no sales yet (C2 is on Jan 8).
    early = build_features(toy_dataset, (date(2024, 1, 1), date(2024, 1, 7)))
    assert "R1" not in early.ids("pharmacy").to_list()
