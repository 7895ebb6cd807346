"""Billing kinds: duplicate charges, frequency caps, DRG upcoding."""

from __future__ import annotations

import pytest
from rules_testkit import claim, hit_ids, line, make_tables, run_kind, stake


def _exam(cid, no=1, code="X1", quantity=1, price=80.0, item_type="exam"):
    return line(cid, no, item_type=item_type, item_code=code, quantity=quantity,
                days_supply=None, unit_price=price)


def test_duplicate_charge_identical_line_within_a_claim():
    tables = make_tables(
        [claim("C1"), claim("C2"), claim("C3")],
        [_exam("C1"), _exam("C1", 2),                         # identical twice: hit
         _exam("C2"), _exam("C2", 2, quantity=2),             # same code, other quantity
         _exam("C3"), _exam("C3", 2, code="X2"),              # two different exams
         line("C3", 3, item_code="G1"), line("C3", 4, item_code="G1")])  # drug twice: hit
    hits = run_kind("duplicate_charge", tables)
    assert hit_ids(hits) == ["C1", "C3"]
    assert stake(hits, "C1") == 80.0 and stake(hits, "C3") == 30.0
    loose = run_kind("duplicate_charge", tables, {"identical_only": False})
    assert hit_ids(loose) == ["C1", "C2", "C3"]


def test_duplicate_charge_patient_day_scope_across_claims():
    tables = make_tables([claim("C1"), claim("C2"), claim("C3", "2024-03-11"),
                          claim("C4", facility="F3")],
                         [_exam("C1"), _exam("C2"), _exam("C3"), _exam("C4")])
    assert run_kind("duplicate_charge", tables).height == 0
    # C2 repeats C1 (same facility, day); C3 is another day; C4 another facility.
    assert hit_ids(run_kind("duplicate_charge", tables, {"scope": "patient_day"})) == ["C2"]


def test_duplicate_charge_leaves_daily_inpatient_items_alone():
    tables = make_tables([claim("C1", setting="inpatient")],
                         [_exam("C1", item_type="treatment", code="T1"),
                          _exam("C1", 2, item_type="treatment", code="T1")])
    assert run_kind("duplicate_charge", tables).height == 0
    assert hit_ids(run_kind("duplicate_charge", tables, {"item_types": ["treatment"]})) == ["C1"]


def test_frequency_limit_cap_per_day_counts_earlier_lines_first():
    tables = make_tables(
        [claim("C1"), claim("C2"), claim("C3", "2024-03-11")],
        [line("C1", item_type="exam", item_code="X1", quantity=2, days_supply=None, unit_price=30),
         line("C2", item_type="exam", item_code="X1", quantity=2, days_supply=None, unit_price=30),
         line("C3", item_type="exam", item_code="X1", quantity=2, days_supply=None, unit_price=30)])
    hits = run_kind("frequency_limit", tables, {"max_quantity_by_item_type": {"exam": 3}})
    assert hit_ids(hits) == ["C2"]          # 4 units on 03-10, one above the cap of 3
    assert stake(hits, "C2") == 30.0
    monthly = run_kind("frequency_limit", tables,
                       {"max_quantity_by_item_type": {"exam": 3}, "period": "1mo"})
    assert hit_ids(monthly) == ["C2", "C3"]


def test_frequency_limit_bed_days_beyond_stay():
    tables = make_tables(
        [claim("C1", setting="inpatient", admit="2024-03-01", discharge="2024-03-05"),
         claim("C2", setting="inpatient", admit="2024-03-01", discharge="2024-03-05", patient="P2")],
        [line("C1", item_type="bed", item_code="BED", quantity=6, days_supply=None, unit_price=40),
         line("C2", item_type="bed", item_code="BED", quantity=4, days_supply=None, unit_price=40)])
    hits = run_kind("frequency_limit", tables)
    assert hit_ids(hits) == ["C1"]
    assert stake(hits, "C1") == 80.0
    assert run_kind("frequency_limit", tables, {"bed_days_within_stay": False}).height == 0


def _inpatient(i: int, weight: float, group: str = "G-A", diagnosis: str = "I21.0"):
    return claim(f"C{i:02d}", "2024-03-20", setting="inpatient", diagnosis=diagnosis,
                 drg_group=group, drg_weight=weight, amount=10_000.0)


def test_drg_upcoding_weight_far_above_peers():
    stays = [_inpatient(i, 1.0 + 0.01 * i) for i in range(12)] + [_inpatient(20, 2.5)]
    hits = run_kind("drg_upcoding", make_tables(stays))
    assert hit_ids(hits) == ["C20"]
    median = sorted([1.0 + 0.01 * i for i in range(12)] + [2.5])[6]
    assert stake(hits, "C20") == pytest.approx(10_000 * (1 - median / 2.5), abs=0.01)
    # Too few cases of the diagnosis: no judgement by weight.
    assert run_kind("drg_upcoding", make_tables(stays), {"min_cases": 20}).height == 0


def test_drg_upcoding_group_outside_allowed_set():
    stays = [_inpatient(1, 1.0), _inpatient(2, 1.0, group="G-B")]
    hits = run_kind("drg_upcoding", make_tables(stays), {"allowed_groups": {"I21": ["G-A"]}})
    assert hit_ids(hits) == ["C02"]


def test_drg_upcoding_rare_heavy_group():
    # 19 stays in the usual group, one coded to a rare and heavier group (not extreme weight).
    stays = [_inpatient(i, 1.0) for i in range(19)] + [_inpatient(30, 1.1, group="G-X")]
    tables = make_tables(stays)
    assert run_kind("drg_upcoding", tables).height == 0
    hits = run_kind("drg_upcoding", tables, {"rare_group_share": 0.1})
    assert hit_ids(hits) == ["C30"]
    # A rare but lighter group is not upcoding.
    light = [_inpatient(i, 1.0) for i in range(19)] + [_inpatient(30, 0.8, group="G-X")]
    assert run_kind("drg_upcoding", make_tables(light), {"rare_group_share": 0.1}).height == 0


def test_drg_upcoding_peer_stays_count_as_reference_only():
    """The scoring model's peer stays (DRG_PEER_STAYS) join the diagnosis's statistics but
    are never judged; without them the judged stays alone are too few."""
    from medfraud.rules.inputs import DRG_PEER_STAYS

    judged = [_inpatient(20, 2.5), _inpatient(21, 1.0)]
    peers = [_inpatient(i, 1.0 + 0.01 * i) for i in range(11)] + [_inpatient(30, 3.0)]
    tables = make_tables(judged)
    assert run_kind("drg_upcoding", tables).height == 0  # 2 cases < min_cases 10
    tables[DRG_PEER_STAYS] = make_tables(peers)["claims"]
    hits = run_kind("drg_upcoding", tables)
    assert hit_ids(hits) == ["C20"]  # C30 is heavier still, but a peer is not judged
    everything = run_kind("drg_upcoding", make_tables(judged + peers))
    assert hit_ids(everything) == ["C20", "C30"]
    assert stake(hits, "C20") == pytest.approx(stake(everything, "C20"))
