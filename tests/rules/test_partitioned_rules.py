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
    # Same hits to the cent: amounts are summed in integer micro-yuan, whatever order the
    # partitions give the lines.
    assert_frame_equal(whole, parts)
    rules = {r.id for r in load_catalogue().enabled}
    assert set(parts["rule_id"].unique()) <= rules
    assert parts.filter(pl.col("level") == "pharmacy").height == \
        whole.filter(pl.col("level") == "pharmacy").height


@pytest.mark.parametrize("window", [None, (date(2024, 4, 1), date(2024, 9, 30))])
def test_small_input_shortcuts_equal_general_path(tiny_dataset, monkeypatch, window):
    # Small inputs share one lines-with-context frame and the window's claims, and sort
    # all hits at once; the general path joins lines per rule, filters the claims lazily
    # and sorts rule by rule.  Same hits, same order.
    assert tiny_dataset.scan("claims").select(pl.len()).collect().item() <= \
        engine.SMALL_INPUT_CLAIMS
    shortcut = evaluate_rules(tiny_dataset, window=window)
    monkeypatch.setattr(engine, "SMALL_INPUT_CLAIMS", 0)
    monkeypatch.setattr(engine, "SORT_TOGETHER_BELOW", -1)
    general = evaluate_rules(tiny_dataset, window=window)
    assert shortcut.height > 0 and shortcut["rule_id"].n_unique() > 5
    assert_frame_equal(shortcut, general, check_exact=False, rel_tol=0, abs_tol=1e-6)
