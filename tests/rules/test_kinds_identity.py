"""Card-use kinds: after death, frequent swiping, distant regions the same day."""

from __future__ import annotations

from datetime import date

from rules_testkit import PATIENTS, claim, hit_ids, make_tables, run_kind, stake


def test_service_after_death():
    dead = [dict(PATIENTS[0], death_date=date(2024, 3, 1)), PATIENTS[1]]
    tables = make_tables([claim("C1", "2024-02-28"), claim("C2", "2024-03-01"),
                          claim("C3", "2024-03-02", amount=77.0),
                          claim("C4", "2024-03-20", patient="P2")], patients=dead)
    hits = run_kind("service_after_death", tables)
    assert hit_ids(hits) == ["C3"]
    assert stake(hits, "C3") == 77.0
    assert run_kind("service_after_death", tables, {"grace_days": 5}).height == 0


def test_card_frequency_pharmacy_month_counts_swipes_past_the_fourth():
    swipes = [claim(f"C{d:02d}", f"2024-03-{d:02d}", setting="pharmacy", pharmacy="R1")
              for d in (1, 5, 9, 13, 17, 21)]
    april = [claim(f"A{d:02d}", f"2024-04-{d:02d}", setting="pharmacy", pharmacy="R1",
                   patient="P2") for d in (1, 5, 9, 13)]
    hits = run_kind("card_frequency", make_tables(swipes + april))
    assert hit_ids(hits) == ["C17", "C21"]
    patient_hits = run_kind("card_frequency", make_tables(swipes + april), level="patient")
    assert hit_ids(patient_hits) == ["P1"]
    assert stake(patient_hits, "P1") == 200.0


def test_card_frequency_many_facilities_one_day():
    day = [claim("C1", facility="F1"), claim("C2", facility="F2", doctor="D2"),
           claim("C3", facility="F3"), claim("C4", facility="F4")]
    three = [claim(f"B{i}", "2024-03-12", facility=f) for i, f in enumerate(["F1", "F3", "F4"])]
    assert hit_ids(run_kind("card_frequency", make_tables(day + three))) == ["C1", "C2", "C3", "C4"]


def test_same_day_distant_regions():
    tables = make_tables([
        claim("C1", facility="F1"), claim("C2", facility="F2", doctor="D2"),       # A and B
        claim("C3", "2024-03-11", facility="F1"), claim("C4", "2024-03-11", facility="F3"),
        claim("C5", "2024-03-12", facility="F1"),
        claim("C6", "2024-03-12", facility="F2", doctor="D2", setting="online"),  # online: fine
    ])
    assert hit_ids(run_kind("same_day_distant_regions", tables)) == ["C1", "C2"]


def test_implausible_identity_unborn_or_too_old():
    odd = [*PATIENTS, dict(PATIENTS[0], patient_id="P3", birth_date=date(1910, 1, 1)),
           dict(PATIENTS[0], patient_id="P4", birth_date=date(2024, 5, 1))]
    tables = make_tables([claim("C1", patient="P3"), claim("C2", patient="P4"),
                          claim("C3", "2024-05-02", patient="P4"), claim("C4")], patients=odd)
    assert hit_ids(run_kind("implausible_identity", tables)) == ["C1", "C2"]
    assert hit_ids(run_kind("implausible_identity", tables, {"max_age": 120})) == ["C2"]


def test_same_day_distant_regions_away_claims_only():
    away = claim("C2", facility="F2", doctor="D2")
    away["cross_region"] = True
    tables = make_tables([claim("C1", facility="F1"), away])
    hits = run_kind("same_day_distant_regions", tables, {"away_claims_only": True})
    assert hit_ids(hits) == ["C2"]
