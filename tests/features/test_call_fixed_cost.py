"""The fixed-cost shortcuts of a claim-feature call (cached expressions, few-claim query
optimisations, the row-count shortcut) leave every feature value unchanged."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import medfraud.features.claims as claims_module
from medfraud.features import FeatureParams, build_features, claim_reference


def _claims(dataset, **kwargs) -> pl.DataFrame:
    return build_features(dataset, levels=("claim",), **kwargs).frames["claim"]


@pytest.mark.parametrize("kwargs", [
    {},
    {"window": (date(2024, 4, 1), date(2024, 9, 30)),
     "reference_window": (date(2024, 1, 1), date(2024, 6, 30))},
])
def test_few_claim_optimisations_give_the_same_features(tiny_dataset, monkeypatch, kwargs):
    # Every plan with the default optimisations, then every plan with the few-claim ones.
    monkeypatch.setattr(claims_module, "FEW_CLAIMS", 0)
    full = _claims(tiny_dataset, **kwargs)
    monkeypatch.setattr(claims_module, "FEW_CLAIMS", 10**9)
    few = _claims(tiny_dataset, **kwargs)
    assert full.height > 1_000  # enough claims for stays, refills and duplicates to occur
    assert_frame_equal(full, few, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_plan_optimizations_by_size():
    assert claims_module._plan_optimizations(None).comm_subplan_elim
    assert claims_module._plan_optimizations(claims_module.FEW_CLAIMS + 1).comm_subexpr_elim
    few = claims_module._plan_optimizations(16)
    assert few.projection_pushdown and few.predicate_pushdown
    assert not few.comm_subplan_elim and not few.comm_subexpr_elim
    # A fresh object each call: updating one leaves the next untouched.
    few.update(comm_subplan_elim=True)
    assert not claims_module._plan_optimizations(16).comm_subplan_elim


def test_cached_expressions_follow_params(toy_dataset):
    default = _claims(toy_dataset)
    strict = _claims(toy_dataset, params=FeatureParams(days_supply_limit_ordinary=3,
                                                        gap_cap_days=100))
    again = _claims(toy_dataset)
    assert_frame_equal(default, again)
    assert strict["days_over_limit_max"].max() > default["days_over_limit_max"].max()
    assert strict["readmission_gap_days"].max() == 100
    assert default["readmission_gap_days"].max() == 365


def test_claim_reference_reuse_across_batches(tiny_dataset):
    """Many calls against one fitted reference (the scoring pattern: cached peer expressions
    keyed by its global statistics) equal fitting the reference in each call."""
    window = (date(2024, 4, 1), date(2024, 4, 30))
    reference_window = (date(2024, 1, 1), date(2024, 3, 31))
    reference = claim_reference(tiny_dataset, reference_window)
    for _ in range(2):
        fitted = _claims(tiny_dataset, window=window, reference_window=reference_window)
        reused = _claims(tiny_dataset, window=window, claim_reference=reference)
        assert_frame_equal(fitted, reused, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_window_count_is_read_only_for_large_tables(tiny_dataset, monkeypatch):
    # Above CLAIMS_PER_PARTITION rows in the table, the window's own count decides the
    # partitions: a window holding fewer claims than the bound still runs in one pass.
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 3_000)
    calls = []
    monkeypatch.setattr(claims_module, "split_by_patient",
                        lambda *a, **k: calls.append(a) or pytest.fail("spilled"))
    window = (date(2024, 4, 1), date(2024, 4, 30))
    assert _claims(tiny_dataset, window=window).height < 3_000
    assert not calls
