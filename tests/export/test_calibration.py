"""Reference CDFs, calibration and bands."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from medfraud.export.calibration import Bands, Calibration, ReferenceCDF


def test_reference_cdf_is_mid_rank_and_monotone():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=10_000)
    ref = ReferenceCDF.fit(scores)
    assert ref.grid.size == 2001
    u = ref.transform(np.array([-10.0, 0.0, 10.0, np.nan]))
    assert u[0] == 0.0 and u[2] == 1.0 and np.isnan(u[3])
    assert abs(u[1] - 0.5) < 0.02
    grid = np.linspace(-3, 3, 100)
    assert np.all(np.diff(ref.transform(grid)) >= 0)


def test_reference_cdf_ties_count_half():
    # A rule detector: 90 % of claims score 0.
    scores = np.r_[np.zeros(900), np.arange(1, 101, dtype=float)]
    ref = ReferenceCDF.fit(scores)
    assert ref.transform(np.array([0.0]))[0] == pytest.approx(0.45, abs=1e-3)


def test_reference_cdf_json_round_trip():
    ref = ReferenceCDF.fit(np.arange(50, dtype=float))
    again = ReferenceCDF.from_json(ref.to_json())
    x = np.linspace(-1, 60, 7)
    assert np.array_equal(ref.transform(x), again.transform(x))


def _labelled(seed: int = 1, n: int = 5000):
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, n)
    p = 1 / (1 + np.exp(-(8 * s - 6)))
    y = (rng.uniform(0, 1, n) < p).astype(np.int8)
    return s, y


def test_platt_recovers_a_logistic_link():
    s, y = _labelled()
    cal = Calibration.fit(s, y, "platt")
    assert cal.a == pytest.approx(8, rel=0.2) and cal.b == pytest.approx(-6, rel=0.2)
    risk = cal.transform(np.array([0.0, 0.5, 1.0]))
    assert np.all((risk > 0) & (risk < 1)) and np.all(np.diff(risk) > 0)


def test_isotonic_is_monotone_and_json_round_trips():
    s, y = _labelled(2)
    cal = Calibration.fit(s, y, "isotonic")
    grid = np.linspace(-0.5, 1.5, 200)
    risk = cal.transform(grid)
    assert np.all(np.diff(risk) >= 0) and risk.min() >= 0 and risk.max() <= 1
    again = Calibration.from_json(cal.to_json())
    assert np.array_equal(again.transform(grid), risk)


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        Calibration.fit(np.arange(10.0), np.zeros(10), "platt")
    with pytest.raises(ValueError, match="platt' or 'isotonic"):
        Calibration.fit(np.arange(10.0), np.r_[np.zeros(5), np.ones(5)], "beta")


def test_bands_cut_training_shares():
    s = np.random.default_rng(3).normal(size=100_000)
    bands = Bands.fit(s)
    labels = pl.DataFrame({"raw_score": s}).select(bands.expr().alias("band"))["band"]
    shares = labels.value_counts(normalize=True)
    share = dict(zip(shares["band"], shares["proportion"]))
    assert share["high"] == pytest.approx(0.01, abs=0.001)
    assert share["medium"] == pytest.approx(0.04, abs=0.001)
    assert Bands.from_json(bands.to_json()) == bands
    with pytest.raises(ValueError):
        Bands.fit(s, high_share=0.1, medium_share=0.05)
