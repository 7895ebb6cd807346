"""Inpatient-stay kinds: readmission, overlapping stays, visits during a stay."""

from __future__ import annotations

from rules_testkit import claim, hit_ids, make_tables, run_kind, stake


def _stay(cid, admit, discharge, diagnosis="K35.2", patient="P1", amount=5000.0):
    return claim(cid, discharge, setting="inpatient", admit=admit, discharge=discharge,
                 diagnosis=diagnosis, patient=patient, amount=amount)


def test_readmission_same_condition_within_15_days():
    tables = make_tables([
        _stay("C1", "2024-03-01", "2024-03-05"),
        _stay("C2", "2024-03-15", "2024-03-18", diagnosis="K35.8"),   # 10 days, same K35: hit
        _stay("C3", "2024-04-20", "2024-04-22"),                      # 33 days later: fine
        _stay("C4", "2024-04-25", "2024-04-26", diagnosis="J18.9"),   # other condition: fine
    ])
    hits = run_kind("readmission", tables)
    assert hit_ids(hits) == ["C1", "C2"]           # the pair; money on the second case
    assert stake(hits, "C2") == 5000.0 and stake(hits, "C1") == 0.0
    only_second = {"flag_index_stay": False}
    assert hit_ids(run_kind("readmission", tables, only_second)) == ["C2"]
    assert hit_ids(run_kind("readmission", tables, {**only_second, "diagnosis_prefix_len": 0})
                   ) == ["C2", "C4"]


def test_overlapping_stays():
    tables = make_tables([
        _stay("C1", "2024-03-01", "2024-03-10"),
        _stay("C2", "2024-03-05", "2024-03-07"),   # inside C1: hit
        _stay("C3", "2024-03-10", "2024-03-12"),   # admitted on C1's discharge day: transfer
        _stay("C4", "2024-03-06", "2024-03-08", patient="P2"),
    ])
    assert hit_ids(run_kind("overlapping_stays", tables)) == ["C2"]


def test_outpatient_during_stay_flags_stay_and_visit():
    tables = make_tables([
        _stay("C1", "2024-03-01", "2024-03-10", amount=8000.0),
        claim("C2", "2024-03-05", amount=120.0),               # visit mid-stay
        claim("C3", "2024-03-10"),                             # discharge day: fine
        claim("C4", "2024-03-05", patient="P2"),               # someone else
    ])
    hits = run_kind("outpatient_during_stay", tables)
    assert hit_ids(hits) == ["C1", "C2"]
    assert stake(hits, "C1") == 8000.0 and stake(hits, "C2") == 120.0
    assert hit_ids(run_kind("outpatient_during_stay", tables, {"flag": "visit"})) == ["C2"]


def test_idle_stay_bed_days_without_treatment():
    from rules_testkit import line
    stays = [_stay("C1", "2024-03-01", "2024-03-07"), _stay("C2", "2024-03-01", "2024-03-07",
                                                           patient="P2"),
             _stay("C3", "2024-04-01", "2024-04-03")]
    bed = dict(item_type="bed", item_code="BED1", days_supply=None, unit_price=45.0)
    treat = dict(item_type="treatment", item_code="T1", days_supply=None, unit_price=30.0)
    lines = [line("C1", 1, quantity=6, **bed), line("C1", 2, quantity=1, **treat),
             line("C2", 1, quantity=6, **bed), line("C2", 2, quantity=5, **treat),
             line("C3", 1, quantity=2, **bed)]                      # too short to judge
    hits = run_kind("idle_stay", make_tables(stays, lines))
    assert hit_ids(hits) == ["C1"]
    assert stake(hits, "C1") == round(270.0 * (1 - 1 / 6), 2)


def test_outpatient_during_stay_other_facility_only():
    tables = make_tables([
        _stay("C1", "2024-03-01", "2024-03-10"),                 # at F1
        claim("C2", "2024-03-05"),                               # F1: same hospital
        _stay("C3", "2024-04-01", "2024-04-10"),
        claim("C4", "2024-04-05", facility="F3")])               # elsewhere
    params = {"flag": "stay", "other_facility_only": True}
    assert hit_ids(run_kind("outpatient_during_stay", tables, params)) == ["C3"]
    assert hit_ids(run_kind("outpatient_during_stay", tables, {"flag": "stay"})) == ["C1", "C3"]
