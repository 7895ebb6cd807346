"""Claim-level features on the hand-built toy dataset (values worked out by hand)."""

from __future__ import annotations

import polars as pl
import pytest


def _row(features, claim_id):
    frame = features.frame("claim")
    return frame.filter(frame["claim_id"] == claim_id).row(0, named=True)


@pytest.mark.parametrize("claim_id, column, expected", [
    # C1: 30 units of G1 (max 3/day) over 5 days -> 30 / 15 = 2
    ("C1", "dose_ratio_max", 2.0),
    # C2: G1 15/(3*10) = 0.5 and G2 1/(1*1) = 1 -> max 1
    ("C2", "dose_ratio_max", 1.0),
    # C2: 10 days for an ordinary patient (limit 7)
    ("C2", "days_over_limit_max", 3),
    # C4: emergency department (limit 3), 5 days of G2
    ("C4", "days_over_limit_max", 2),
    # P1 filled G1 on Jan 5 for 5 days, again on Jan 8 -> 2 days overlap
    ("C2", "refill_overlap_days_max", 2),
    # C9 (same day as C2's 10-day fill) -> 10 days overlap
    ("C9", "refill_overlap_days_max", 10),
    ("C4", "sex_restriction_hits", 1),          # G2 is for men, P2 is female
    ("C4", "age_restriction_hits", 1),          # G3 needs age >= 18, P2 is 8
    ("C2", "sex_restriction_hits", 0),          # G2 for a man is fine
    ("C4", "days_after_death", 5),              # died Mar 10, claim Mar 15
    ("C1", "days_after_death", 0),
    ("C2", "card_claims_same_day", 3),          # C2, C3, C9 on Jan 8
    ("C3", "card_regions_same_day", 2),         # regions A and B
    ("C3", "card_facilities_same_day", 2),      # F1 and F2
    ("C3", "doctor_on_duty", 0),                # D3 not on the roster
    ("C2", "doctor_on_duty", 1),
    ("C4", "doctor_roster_other_facility", 1),  # D2 on duty at F2, billed at F1
    ("C5", "length_of_stay", 10),
    ("C5", "care_lines_per_bed_day", 0.2),      # 2 treatment lines / 10 days
    ("C6", "readmission_gap_days", 9),          # J18 discharged Feb 11, readmitted Feb 20
    ("C6", "readmitted_within_limit", 1),
    ("C8", "readmitted_within_limit", 0),       # other diagnosis
    ("C8", "readmission_gap_days", 365),        # no previous stay: the cap
    ("C6", "n_overlapping_stays", 1),           # Feb 20-25 overlaps Feb 24-28
    ("C8", "n_overlapping_stays", 1),
    ("C5", "n_overlapping_stays", 0),
    ("C7", "during_inpatient_stay", 1),         # outpatient Feb 22 inside the Feb 20-25 stay
    ("C6", "n_outpatient_during_stay", 1),
    ("C1", "dup_lines_in_claim", 1),            # two identical G1 lines
    ("C2", "dup_lines_across_claims", 1),       # G1 on Jan 8 in C2 and C9
    ("C3", "dup_lines_across_claims", 0),
    ("C5", "weekend", 1),                       # 2024-02-11 is a Sunday
    ("C1", "night", 1),                         # settled at 23:00
    ("C2", "high_value_drug_share", 0.4),       # G2 (100/unit) is 100 of 250 drug yuan
    ("C6", "drg_weight_dx_ratio", 1.25),        # 2.5 vs median 2.0 of J18
    ("C3", "cross_region", 1),
])
def test_known_claim_values(toy_features, claim_id, column, expected):
    assert _row(toy_features, claim_id)[column] == pytest.approx(expected)


def test_robust_z_of_drg_weight(toy_features):
    # J18 weights 1.5 and 2.5: median 2, MAD 0.5 -> z = (2.5 - 2) / (1.4826 * 0.5)
    assert _row(toy_features, "C6")["drg_weight_dx_z"] == pytest.approx(0.5 / (1.4826 * 0.5))


def test_not_applicable_features_are_neutral(toy_features):
    row = _row(toy_features, "C3")  # outpatient exam only: no drug, no DRG
    assert row["n_drug_lines"] == 0
    assert row["dose_ratio_max"] == 0
    assert row["amount_drg_ratio"] == 1.0 and row["amount_drg_z"] == 0.0
    assert row["drug_amount_ratio_max"] == 1.0 and row["drug_amount_z_max"] == 0.0


def test_limits_are_parameters(toy_dataset):
    from medfraud.features import FeatureParams, build_features

    features = build_features(toy_dataset, levels=["claim"],
                              params=FeatureParams(days_supply_limit_ordinary=3))
    assert _row(features, "C2")["days_over_limit_max"] == 7  # 10 - 3


def _line_flags_of(**columns):
    """``_line_flags`` of a hand-written line frame (claims given by their _cidx)."""
    import polars as pl

    from medfraud.features.claims import _line_flags

    lines = pl.DataFrame(columns).with_columns(
        pl.col("patient_id").hash(0).alias("_pkey"), pl.col("item_code").hash(0).alias("_ikey"),
        (pl.col("item_type") == "drug").alias("_is_drug"),
        (pl.col("item_type") != "bed").alias("_not_bed"),
        pl.col("_cidx").cast(pl.UInt32))
    return _line_flags(lines).sort("_cidx", "line_no")


def test_daily_bed_lines_are_not_duplicates():
    from datetime import date

    import polars as pl

    flags = _line_flags_of(
        _cidx=[0] * 5 + [1], line_no=[1, 2, 3, 4, 5, 1],
        item_type=["bed", "bed", "bed", "drug", "drug", "drug"],
        item_code=["BED", "BED", "BED", "G1", "G1", "G1"],
        quantity=[1.0, 1.0, 1.0, 2.0, 2.0, 5.0], days_supply=[None, None, None, 1, 1, 1],
        patient_id=["P1"] * 6, service_date=[date(2024, 1, 1)] * 6)
    out = flags.group_by("_cidx").agg(pl.len().alias("n_lines"), pl.col("_dup_in").sum(),
                                      pl.col("_dup_across").sum()).sort("_cidx")
    assert out["_dup_in"].to_list() == [1, 0]   # only the repeated G1 x2
    assert out["_dup_across"].to_list() == [2, 1]  # G1 billed in C1 and C2
    assert out["n_lines"].to_list() == [5, 1]


def test_refill_overlap_skips_other_patients_and_non_drug_lines():
    from datetime import date

    flags = _line_flags_of(
        _cidx=[0, 1, 1, 2, 3], line_no=[1, 1, 2, 1, 1],
        item_type=["drug", "exam", "drug", "drug", "drug"],
        # claim 1 also bills an exam under the drug's code: not a fill, not in between.
        item_code=["G1", "G1", "G1", "G1", "G1"], quantity=[1.0] * 5,
        days_supply=[10, None, 3, 5, 30],
        patient_id=["P1", "P1", "P1", "P1", "P2"],
        service_date=[date(2024, 1, 1), date(2024, 1, 5), date(2024, 1, 5), date(2024, 1, 20),
                      date(2024, 1, 6)])
    # fill 2 is 4 days into fill 1's 10 days; fill 3 comes after fill 2 ran out; P2 is alone.
    assert flags["_overlap"].to_list() == [0, None, 6, 0, 0]
    assert flags["_dup_across"].to_list() == [False] * 5


def test_line_flags_sorting_only_repeated_pairs_equals_full_sort():
    # Lines alone in their (patient, item) pair skip the sort; the flags of every line are
    # those of sorting all lines (the lazy path still sorts everything).
    from datetime import date, timedelta

    import numpy as np
    import polars as pl

    from medfraud.features.claims import _LINE_ORDER, _line_flag_exprs, _line_flags

    rng = np.random.default_rng(11)
    n = 3_000
    claim = rng.integers(0, 800, n)
    lines = pl.DataFrame({
        "_cidx": claim.astype(np.uint32), "line_no": rng.integers(1, 6, n).astype(np.int32),
        "patient_id": [f"P{c % 300}" for c in claim],
        "item_type": rng.choice(["drug", "drug", "exam", "bed"], n),
        "item_code": rng.choice([f"G{i}" for i in range(40)], n),
        "quantity": rng.integers(1, 3, n).astype(float),
        "days_supply": pl.Series(rng.integers(1, 30, n).astype(np.int32))
        .set(pl.Series(rng.random(n) < 0.1), None),
        "service_date": [date(2024, 1, 1) + timedelta(days=int(c % 60)) for c in claim],
    }).unique(["_cidx", "line_no"]).with_columns(
        pl.col("patient_id").hash(0).alias("_pkey"), pl.col("item_code").hash(0).alias("_ikey"),
        (pl.col("item_type") == "drug").alias("_is_drug"),
        (pl.col("item_type") != "bed").alias("_not_bed"))
    want = lines.sort(_LINE_ORDER).with_columns(_line_flag_exprs()).sort("_cidx", "line_no")
    got = _line_flags(lines).sort("_cidx", "line_no")
    assert got.equals(want)
    assert _line_flags(lines.lazy()).collect().sort("_cidx", "line_no").equals(want)
    alone = lines.select(pl.struct("_pkey", "_ikey").is_unique()).to_series()
    assert 0.1 < alone.mean() < 0.9  # both parts are exercised
    assert want.filter(pl.col("_overlap") > 0).height and want["_dup_across"].any() \
        and want["_dup_in"].any()


def test_narrow_counts_and_day_spans_saturate_instead_of_wrapping():
    """The stored claim frame's UInt16 counts and Int16 day spans clip at their bounds: a
    cast alone would wrap 70 000 lines to 4 464."""
    from medfraud.features.claims import _NARROW_COLUMNS, SETTING_DTYPE

    wide = pl.DataFrame({
        "n_lines": pl.Series([3, 70_000], dtype=pl.UInt32),
        "days_after_death": pl.Series([-40_000, 12], dtype=pl.Int64),
        "dose_ratio_max": [1.5, 2.0], "setting": ["inpatient", "online"],
    })
    narrow = wide.with_columns(_NARROW_COLUMNS)
    assert narrow.schema == pl.Schema({"n_lines": pl.UInt16, "days_after_death": pl.Int16,
                                       "dose_ratio_max": pl.Float32, "setting": SETTING_DTYPE})
    assert narrow["n_lines"].to_list() == [3, 65_535]
    assert narrow["days_after_death"].to_list() == [-32_767, 12]
    assert narrow["setting"].cast(pl.String).to_list() == ["inpatient", "online"]
