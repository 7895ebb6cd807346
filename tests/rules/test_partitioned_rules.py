"""Rules judged patient partition by patient partition give the hits of one pass."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from rules_testkit import claim, make_tables

import medfraud.rules.engine as engine
from medfraud.partitions import split_by_patient
from medfraud.rules import evaluate_rules, evaluate_tables, load_catalogue
from medfraud.rules.registry import KINDS


def test_every_registered_kind_is_classified():
    # A new kind must be placed deliberately: patient-local kinds are split by patient.
    local = engine.PATIENT_LOCAL_KINDS
    assert local <= set(KINDS)
    assert set(KINDS) - local == {"drg_upcoding", "inventory_mismatch"}


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


def test_doctor_day_across_partitions_judged_over_the_window():
    # D1 signs claims at F1 (P1) and at F3 (P2) on one day: the two patients fall in
    # different partitions, and the two-facility test must still see both claims.
    # D1 (registered at F1) is rostered at F3 on both days.
    roster = [dict(doctor_id="D1", facility_id="F3", date=date(2024, 3, day)) for day in (12, 13)]
    tables = make_tables([claim("C1", "2024-03-12", patient="P1"),
                          claim("C2", "2024-03-12", patient="P2", facility="F3"),
                          claim("C3", "2024-03-13", patient="P2", facility="F3")], roster=roster)
    catalogue = load_catalogue()
    whole = evaluate_tables(tables, catalogue)
    off_duty = whole.filter(pl.col("kind") == "doctor_off_duty")
    # C1: billed away from the roster's facility; C2: at the rostered F3, but D1 also billed
    # at F1 that day (a claim of another patient) and F3 is not D1's own facility.
    assert off_duty["id"].to_list() == ["C1", "C2"]
    lazy = {name: frame.lazy() for name, frame in tables.items()}
    with split_by_patient(lazy, claims_per_partition=1) as partitions:
        assert len(partitions.parts) == 2
        for roster in (True, False):  # the roster column from the split, or joined per kind
            split = partitions
            if not roster:
                split = type(partitions)(partitions.start, partitions.end, partitions.n_claims,
                                         [{**p, "claims": p["claims"].drop("_roster_facility")}
                                          for p in partitions.parts])
            assert_frame_equal(evaluate_tables(tables, catalogue, partitions=split), whole)
