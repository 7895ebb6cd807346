"""Drug-line kinds: one hand-built positive and negative case each."""

from __future__ import annotations

import pytest
from rules_testkit import claim, hit_ids, line, make_tables, run_kind, stake


def test_sex_restriction_flags_male_drug_for_female_only():
    tables = make_tables(
        [claim("C1", patient="P1"), claim("C2", patient="P2")],
        [line("C1", item_code="G2", quantity=1, unit_price=50),
         line("C2", item_code="G2", quantity=1, unit_price=50),
         line("C2", 2, item_code="G1")])
    hits = run_kind("sex_restriction", tables)
    assert hit_ids(hits) == ["C2"]
    assert stake(hits, "C2") == 50.0  # only the offending line, not the G1 line


def test_age_restriction_uses_age_on_service_date():
    # P2 (born 2015) is a child: G2 needs age >= 18.  P1 turns 18... long ago: fine.
    tables = make_tables([claim("C1", patient="P1"), claim("C2", patient="P2")],
                         [line("C1", item_code="G2", quantity=1, unit_price=50),
                          line("C2", item_code="G2", quantity=1, unit_price=50)])
    assert hit_ids(run_kind("age_restriction", tables)) == ["C2"]


def test_age_restriction_birthday_boundary():
    from datetime import date

    from rules_testkit import PATIENTS
    young = dict(PATIENTS[0], patient_id="P3", birth_date=date(2006, 3, 11))
    tables = make_tables([claim("C1", "2024-03-10", patient="P3"),
                          claim("C2", "2024-03-11", patient="P3")],
                         [line("C1", item_code="G2"), line("C2", item_code="G2")],
                         patients=[*PATIENTS, young])
    # 17 the day before the 18th birthday, 18 on it.
    assert hit_ids(run_kind("age_restriction", tables)) == ["C1"]


def test_indication_restriction_prefix_match():
    tables = make_tables([claim("C1", diagnosis="E11.9"), claim("C2", diagnosis="J20.1"),
                          claim("C3", diagnosis="J20.1")],
                         [line("C1", item_code="G2"), line("C2", item_code="G2"),
                          line("C3", item_code="G1")])
    params = {"allowed_diagnoses": {"antidiabetic": ["E10", "E11"]}}
    assert hit_ids(run_kind("indication_restriction", tables, params)) == ["C2"]
    assert run_kind("indication_restriction", tables).height == 0  # no map: unrestricted


def test_facility_level_restriction():
    tables = make_tables([claim("C1", facility="F1", doctor="D1"),
                          claim("C2", facility="F2", doctor="D2")],
                         [line("C1", item_code="G2"), line("C2", item_code="G2"),
                          line("C2", 2, item_code="G1")])
    hits = run_kind("facility_level_restriction", tables)
    assert hit_ids(hits) == ["C2"]
    assert stake(hits, "C2") == 30.0


def test_care_setting_restriction_bed_outside_inpatient():
    tables = make_tables([claim("C1", setting="outpatient"), claim("C2", setting="inpatient"),
                          claim("C3", setting="outpatient")],
                         [line("C1", item_type="bed", item_code="BED", quantity=2,
                               days_supply=None, unit_price=40),
                          line("C2", item_type="bed", item_code="BED", quantity=2,
                               days_supply=None, unit_price=40),
                          line("C3", item_code="G3")])
    hits = run_kind("care_setting_restriction", tables)
    assert hit_ids(hits) == ["C1"]
    assert stake(hits, "C1") == 80.0
    by_category = {"allowed_settings_by_item_type": {},
                   "allowed_settings_by_drug_category": {"antibiotic": ["inpatient"]}}
    assert hit_ids(run_kind("care_setting_restriction", tables, by_category)) == ["C3"]


def test_course_limit_excess_days_share():
    tables = make_tables([claim("C1"), claim("C2")],
                         [line("C1", item_code="G3", quantity=20, days_supply=20, unit_price=5),
                          line("C2", item_code="G3", quantity=14, days_supply=14, unit_price=5)])
    hits = run_kind("course_limit", tables, {"max_days_by_category": {"antibiotic": 14}})
    assert hit_ids(hits) == ["C1"]
    assert stake(hits, "C1") == pytest.approx(100.0 * 6 / 20)


def test_dose_over_label_excess_units():
    # G1: at most 3 units a day.  10 units for 3 days is 1 over; 9 is on label.
    tables = make_tables([claim("C1"), claim("C2")],
                         [line("C1", quantity=10, days_supply=3),
                          line("C2", quantity=9, days_supply=3)])
    hits = run_kind("dose_over_label", tables)
    assert hit_ids(hits) == ["C1"]
    assert stake(hits, "C1") == 10.0
    assert run_kind("dose_over_label", tables, {"tolerance": 1.5}).height == 0


def test_quantity_over_days_limit_by_patient_and_department():
    tables = make_tables(
        [claim("C1", patient="P1"),                                  # ordinary: 10 > 7
         claim("C2", patient="P2"),                                  # chronic: 10 <= 84
         claim("C3", patient="P2", doctor="D2", facility="F2"),      # emergency: 5 > 3
         claim("C4", patient="P1")],                                 # ordinary: 7 <= 7
        [line("C1", quantity=10, days_supply=10), line("C2", quantity=10, days_supply=10),
         line("C3", quantity=5, days_supply=5), line("C4", quantity=7, days_supply=7)])
    hits = run_kind("quantity_over_days_limit", tables)
    assert hit_ids(hits) == ["C1", "C3"]
    assert stake(hits, "C1") == pytest.approx(100.0 * 3 / 10)


def test_overlapping_refill_with_tolerance_and_history():
    tables = make_tables(
        [claim("C1", "2024-03-01"), claim("C2", "2024-03-05"),   # 30-day fill, refill day 4
         claim("C3", "2024-05-01"), claim("C4", "2024-05-26"),   # refill 2 days early: tolerated
         claim("C5", "2024-03-05", patient="P2")],               # another patient: unrelated
        [line("C1", quantity=30, days_supply=30), line("C2", quantity=30, days_supply=30),
         line("C3", quantity=27, days_supply=27), line("C4", quantity=10, days_supply=10),
         line("C5", quantity=30, days_supply=30)])
    hits = run_kind("overlapping_refill", tables)
    assert hit_ids(hits) == ["C2"]
    assert stake(hits, "C2") == pytest.approx(300.0 * 26 / 30)
    # The previous fill lies before the window: it is history and still counts.
    from datetime import date
    windowed = run_kind("overlapping_refill", tables, window=(date(2024, 3, 2), date(2024, 3, 31)))
    assert hit_ids(windowed) == ["C2"]
    assert run_kind("overlapping_refill", tables, {"tolerance_days": 30}).height == 0
    # 26 of 30 days left: above a 25 % relative tolerance (7.5 days), below 90 % (27 days).
    assert hit_ids(run_kind("overlapping_refill", tables, {"tolerance_fraction": 0.25})) == ["C2"]
    assert run_kind("overlapping_refill", tables, {"tolerance_fraction": 0.9}).height == 0


def test_overlapping_refill_ignores_repeated_lines_within_one_claim():
    tables = make_tables([claim("C1")], [line("C1", quantity=10, days_supply=10),
                                         line("C1", 2, quantity=10, days_supply=10)])
    assert run_kind("overlapping_refill", tables).height == 0
