"""Rules judged patient partition by patient partition give the hits of one pass."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import medfraud.rules.engine as engine
from medfraud.rules import evaluate_rules, load_catalogue
from medfraud.rules.registry import KINDS


def test_every_registered_kind_is_classified():
    # A new kind must be placed deliberately: patient-local kinds are split by patient.
    local = engine.PATIENT_LOCAL_KINDS
    assert local <= set(KINDS)
    assert set(KINDS) - local == {"drg_upcoding", "inventory_mismatch", "doctor_off_duty"}


@pytest.mark.parametrize("window", [None, (date(2024, 4, 1), date(2024, 9, 30))])
def test_partitioned_rules_equal_single_pass(tiny_dataset, monkeypatch, window):
    whole = evaluate_rules(tiny_dataset, window=window)
    monkeypatch.setattr(engine, "CLAIMS_PER_PARTITION", 700)  # ~10 partitions
    parts = evaluate_rules(tiny_dataset, window=window)
    assert whole.height > 0
    # Per-claim amounts are sums of line amounts rounded to cents: summation order may
    # move a half-cent across the rounding boundary, nothing more.
    assert_frame_equal(whole, parts, check_exact=False, rel_tol=0, abs_tol=0.0100001)
    rules = {r.id for r in load_catalogue().enabled}
    assert set(parts["rule_id"].unique()) <= rules
    assert parts.filter(pl.col("level") == "pharmacy").height == \
        whole.filter(pl.col("level") == "pharmacy").height
