"""Peer statistics: robust z, group fallback, and fitting on the reference window only."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from medfraud.features._common import attach_peer_stats, robust_stats


def test_robust_stats_mad_and_fallbacks():
    frame = pl.LazyFrame({"g": ["a"] * 5 + ["b"] * 4 + ["c"] * 2,
                          "x": [1.0, 2, 3, 4, 100, 5, 5, 5, 9, 7, 7]})
    out = robust_stats(frame, ["g"], "x", "s").collect().sort("g")
    # a: median 3, MAD 1; b: MAD 0 -> mean absolute deviation 1; c: no spread -> null
    assert out["s_med"].to_list() == [3.0, 5.0, 7.0]
    assert out["s_scale"].to_list()[:2] == pytest.approx([1.4826, 1.2533 * 1.0])
    assert out["s_scale"][2] is None


def test_attach_peer_stats_uses_reference_and_global_fallback():
    reference = pl.LazyFrame({"g": ["a", "a", "a"], "x": [1.0, 2.0, 3.0]})
    frame = pl.LazyFrame({"g": ["a", "z", "a"], "x": [4.0, 4.0, None]})
    out = attach_peer_stats(frame, reference, ["g"], "x", "p").collect()
    # group z is unseen: global reference statistics (same here); null x is neutral
    assert out["p_ratio"].to_list() == pytest.approx([2.0, 2.0, 1.0])
    assert out["p_z"].to_list() == pytest.approx([2 / 1.4826, 2 / 1.4826, 0.0])


def test_reference_window_statistics_are_used(toy_dataset):
    from medfraud.features import build_features

    test_window = (date(2024, 3, 1), date(2024, 3, 31))
    train_window = (date(2024, 1, 1), date(2024, 2, 29))
    own = build_features(toy_dataset, test_window, levels=["claim"])
    scored = build_features(toy_dataset, test_window, levels=["claim"],
                            reference_window=train_window)
    # C4 (outpatient, I10, level-3 facility, 300 yuan) is alone in March: ratio 1 to itself;
    # against January-February its only peer is C1 (100 yuan) -> ratio 3.
    assert own.frame("claim")["amount_dx_ratio"].to_list() == [1.0]
    assert scored.frame("claim")["amount_dx_ratio"].to_list() == [3.0]
    assert scored.meta["reference_window"] == train_window


def test_entity_peer_z_uses_reference(toy_dataset):
    from medfraud.features import build_features

    features = build_features(toy_dataset, (date(2024, 3, 1), date(2024, 3, 31)),
                              levels=["doctor", "facility"],
                              reference_window=(date(2024, 1, 1), date(2024, 2, 29)))
    # Only D2 works in March; its peers (emergency at level 3) are absent in the reference,
    # so the global reference statistics of doctors D1 (6 claims) and D3 (2 claims) apply.
    d2 = features.frame("doctor").row(0, named=True)
    assert d2["doctor_id"] == "D2"
    med, mad = 4.0, 2.0  # median of (6, 2) and its MAD
    assert d2["peer_z_n_claims"] == pytest.approx((1 - med) / (1.4826 * mad))
