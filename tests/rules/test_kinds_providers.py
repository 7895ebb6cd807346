"""Provider kinds: pharmacy stock reconciliation and doctors off duty."""

from __future__ import annotations

from datetime import date

import pytest
from rules_testkit import claim, hit_ids, line, make_tables, run_kind, stake


def _sales():
    claims = [claim("C1", "2024-03-01", setting="pharmacy", pharmacy="R1"),
              claim("C2", "2024-03-20", setting="pharmacy", pharmacy="R1"),
              claim("C3", "2024-03-21", setting="outpatient")]
    lines = [line("C1", item_code="G2", quantity=8, unit_price=50),
             line("C2", item_code="G2", quantity=8, unit_price=50),
             line("C2", 2, item_code="G1", quantity=5, unit_price=10),
             line("C3", item_code="G2", quantity=100, unit_price=50)]   # not a pharmacy sale
    return claims, lines


def _purchases(g2_units: float):
    return [dict(pharmacy_id="R1", drug_code="G2", purchase_date=date(2024, 1, 1),
                 quantity=10.0, supplier_id="OPENING"),
            dict(pharmacy_id="R1", drug_code="G2", purchase_date=date(2024, 2, 1),
                 quantity=g2_units, supplier_id="S1"),
            dict(pharmacy_id="R1", drug_code="G1", purchase_date=date(2024, 1, 1),
                 quantity=100.0, supplier_id="OPENING")]


def test_inventory_mismatch_sales_above_purchases_incl_opening():
    claims, lines = _sales()
    short = run_kind("inventory_mismatch", make_tables(claims, lines, purchases=_purchases(2.0)),
                     level="pharmacy")
    assert hit_ids(short) == ["R1"] and short["level"].to_list() == ["pharmacy"]
    assert stake(short, "R1") == pytest.approx(4 * 50.0)   # sold 16, bought 10 + 2
    enough = make_tables(claims, lines, purchases=_purchases(6.0))
    assert run_kind("inventory_mismatch", enough, level="pharmacy").height == 0


def test_inventory_mismatch_window_cuts_later_purchases():
    claims, lines = _sales()
    late = _purchases(0.0) + [dict(pharmacy_id="R1", drug_code="G2", purchase_date=date(2024, 4, 1),
                                   quantity=50.0, supplier_id="S1")]
    tables = make_tables(claims, lines, purchases=late)
    assert run_kind("inventory_mismatch", tables, level="pharmacy").height == 0
    window = (date(2024, 3, 1), date(2024, 3, 31))
    assert hit_ids(run_kind("inventory_mismatch", tables, level="pharmacy", window=window)) == ["R1"]


def test_inventory_mismatch_rejects_claim_level():
    from medfraud.rules import Rule
    with pytest.raises(ValueError, match="pharmacy"):
        Rule(id="T1", name_zh="x", name_en="x", kind="inventory_mismatch", reason_code="X",
             stage="事后", severity=1, result_class="违规", level="claim")


def test_doctor_off_duty_roster_and_two_facilities():
    claims = [claim("C1", "2024-03-10"), claim("C2", "2024-03-11"),
              claim("C3", "2024-03-12"), claim("C4", "2024-03-12", facility="F3"),
              claim("C5", "2024-03-11", setting="pharmacy", pharmacy="R1")]
    roster = [dict(doctor_id="D1", facility_id="F1", date=date(2024, 3, 10)),
              dict(doctor_id="D1", facility_id="F1", date=date(2024, 3, 12))]
    hits = run_kind("doctor_off_duty", make_tables(claims, roster=roster))
    # C2: not rostered; C4: at F3 on a day D1 is rostered (and registered) at F1.
    # C3 is the doctor's own facility; C5: a pharmacy sale is not a visit.
    assert hit_ids(hits) == ["C2", "C4"]
    only_roster = run_kind("doctor_off_duty", make_tables(claims, roster=roster),
                           {"check_facility": False, "two_facilities": False})
    assert hit_ids(only_roster) == ["C2"]
    two_places = run_kind("doctor_off_duty", make_tables(claims, roster=roster),
                          {"check_facility": False})
    assert hit_ids(two_places) == ["C2", "C4"]
    doctor = run_kind("doctor_off_duty", make_tables(claims, roster=roster), level="doctor")
    assert hit_ids(doctor) == ["D1"] and stake(doctor, "D1") == 200.0
