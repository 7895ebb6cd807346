"""One split by patient, shared by the claim features and the audit rules."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import medfraud.dataset as dataset_module
import medfraud.features.claims as claims_module
import medfraud.rules.engine as rules_engine
from medfraud.features import build_features
from medfraud.partitions import (
    ROSTER_COLUMN,
    ROW_COLUMN,
    PatientPartitions,
    sort_by_column,
    split_by_patient,
)
from medfraud.rules import evaluate_rules

# The tiny preset covers 2024-01-01 .. 2024-06-30.
WINDOW = (date(2024, 3, 1), date(2024, 6, 30))


def _all(partitions: PatientPartitions, table: str) -> pl.DataFrame:
    return pl.concat([part[table].collect() for part in partitions.parts])


def test_small_input_is_not_split(tiny_dataset):
    with split_by_patient(tiny_dataset) as partitions:
        assert partitions is None


@pytest.mark.parametrize("window", [None, WINDOW])
def test_split_holds_each_claim_once_with_its_patient_and_lines(tiny_dataset, window):
    claims = tiny_dataset.scan("claims").collect()
    if window is not None:
        claims = claims.filter(pl.col("service_date").is_between(*window))
    with split_by_patient(tiny_dataset, window=window, claims_per_partition=500) as partitions:
        assert partitions.n_claims == claims.height
        assert len(partitions.parts) > 3
        split = _all(partitions, "claims")
        # Every claim once, numbered by its position in the table (its order: claim_id).
        assert split.height == claims.height
        assert_frame_equal(split.sort(ROW_COLUMN).drop(ROW_COLUMN, ROSTER_COLUMN), claims)
        assert split[ROW_COLUMN].sort().to_list() == list(range(claims.height))
        # A patient's claims, registry row and lines are in one partition.
        owner = pl.concat([part["claims"].select("patient_id", "claim_id").collect()
                           .with_columns(pl.lit(i).alias("part"))
                           for i, part in enumerate(partitions.parts)])
        assert owner.group_by("patient_id").agg(pl.col("part").n_unique())["part"].max() == 1
        for i, part in enumerate(partitions.parts):
            mine = owner.filter(pl.col("part") == i)
            patients = part["patients"].collect()["patient_id"]
            assert set(mine["patient_id"]) <= set(patients)
            lines = part["claim_lines"].collect()["claim_id"]
            assert set(lines) <= set(mine["claim_id"])
        lines = tiny_dataset.scan("claim_lines").collect() \
            .join(claims.select("claim_id"), on="claim_id", how="semi")
        assert _all(partitions, "claim_lines").height == lines.height


def test_roster_facility_is_the_doctors_roster_that_day(tiny_dataset):
    roster = tiny_dataset.scan("duty_roster").collect()
    with split_by_patient(tiny_dataset, claims_per_partition=1_000) as partitions:
        split = _all(partitions, "claims")
    expected = split.drop(ROSTER_COLUMN).join(
        roster.select("doctor_id", pl.col("date").alias("service_date"),
                      pl.col("facility_id").alias(ROSTER_COLUMN)),
        on=["doctor_id", "service_date"], how="left")
    assert_frame_equal(split.sort(ROW_COLUMN), expected.sort(ROW_COLUMN))
    assert split[ROSTER_COLUMN].null_count() < split.height
    with split_by_patient(tiny_dataset, claims_per_partition=1_000, roster=False) as partitions:
        assert ROSTER_COLUMN not in partitions.parts[0]["claims"].collect_schema()


def test_covers():
    history = PatientPartitions(None, date(2024, 9, 30), 1, [])
    assert history.covers(None, date(2024, 9, 30))
    assert history.covers(date(2024, 4, 1), date(2024, 6, 30))
    assert not history.covers(date(2024, 4, 1), date(2024, 12, 31))
    assert not history.covers(None, None)
    window = PatientPartitions(date(2024, 4, 1), None, 1, [])
    assert window.covers(date(2024, 5, 1), None)
    assert not window.covers(None, date(2024, 6, 30))


@pytest.fixture
def spills(monkeypatch):
    """Count the splits (each is one streaming pass writing every split table)."""
    calls = []
    original = dataset_module.spill_partitions

    def counted(frames, n_parts, folder):
        calls.append(sorted(frames))
        return original(frames, n_parts, folder)

    monkeypatch.setattr("medfraud.partitions.spill_partitions", counted)
    return calls


def test_features_and_rules_share_one_split(tiny_dataset, monkeypatch, spills):
    """Features (window and reference window) and rules read one split made from the
    first claim, and give what each gives splitting on its own."""
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 1_000)
    monkeypatch.setattr(rules_engine, "CLAIMS_PER_PARTITION", 1_000)
    reference = (date(2024, 1, 1), date(2024, 2, 29))
    alone = build_features(tiny_dataset, WINDOW, reference_window=reference)
    alone_hits = evaluate_rules(tiny_dataset, window=WINDOW)
    assert len(spills) == 3  # window, reference window, rules' history
    spills.clear()
    with split_by_patient(tiny_dataset, end=WINDOW[1], claims_per_partition=1_000) as shared:
        features = build_features(tiny_dataset, WINDOW, reference_window=reference,
                                  partitions=shared)
        hits = evaluate_rules(tiny_dataset, window=WINDOW, partitions=shared)
    assert len(spills) == 1
    for level, frame in alone.frames.items():
        assert_frame_equal(features.frames[level], frame, check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)
    assert hits.height > 0
    assert_frame_equal(hits, alone_hits)


def test_a_split_that_misses_claims_is_not_used(tiny_dataset, monkeypatch, spills):
    """A split ending before the window, or starting after the rules' history begins,
    does not hold what they need: each then splits for itself."""
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 1_000)
    monkeypatch.setattr(rules_engine, "CLAIMS_PER_PARTITION", 1_000)
    with split_by_patient(tiny_dataset, WINDOW[0], date(2024, 5, 15),
                          claims_per_partition=1_000) as short:
        spills.clear()
        features = build_features(tiny_dataset, WINDOW, levels=["claim"], partitions=short)
        hits = evaluate_rules(tiny_dataset, window=WINDOW, partitions=short)
    assert len(spills) == 2
    assert features.frame("claim")["service_date"].max() > date(2024, 5, 15)
    assert_frame_equal(hits, evaluate_rules(tiny_dataset, window=WINDOW))


def test_a_split_without_the_roster_serves_the_rules_only(tiny_dataset, monkeypatch, spills):
    """A split made with ``roster=False`` says so; the claim features, which read the
    roster's facility from the split, then split for themselves, and the rules judge
    doctor_off_duty by joining the roster."""
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 1_000)
    with split_by_patient(tiny_dataset, end=WINDOW[1], claims_per_partition=1_000,
                          roster=False) as bare:
        assert not bare.with_roster
        assert ROSTER_COLUMN not in bare.parts[0]["claims"].collect_schema().names()
        spills.clear()
        features = build_features(tiny_dataset, WINDOW, levels=["claim"], partitions=bare)
        hits = evaluate_rules(tiny_dataset, window=WINDOW, partitions=bare)
    assert len(spills) == 1  # the features' own split; the rules used the bare one
    assert_frame_equal(features.frame("claim"),
                       build_features(tiny_dataset, WINDOW, levels=["claim"]).frame("claim"))
    assert_frame_equal(hits, evaluate_rules(tiny_dataset, window=WINDOW))
    assert hits.filter(pl.col("kind") == "doctor_off_duty").height > 0


def test_partitions_without_claims_in_the_window(tiny_dataset, monkeypatch):
    """A split from the first claim has partitions with no claim in a short window: they
    add nothing, and the features equal the single pass."""
    day = (date(2024, 6, 30), date(2024, 6, 30))
    whole = build_features(tiny_dataset, day)
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 5)
    with split_by_patient(tiny_dataset, end=day[1], claims_per_partition=300) as shared:
        in_window = [part["claims"].filter(pl.col("service_date") == day[0])
                     .select(pl.len()).collect().item() for part in shared.parts]
        assert 0 in in_window and sum(in_window) == whole.frame("claim").height
        parts = build_features(tiny_dataset, day, partitions=shared)
    for level, frame in whole.frames.items():
        assert_frame_equal(parts.frames[level], frame, check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)


def test_sort_by_column_matches_sort_and_empties_input():
    frame = pl.DataFrame({"id": ["c", "a", "b", "a0"], "x": [3.0, 1.0, 2.0, 0.5],
                          "n": [3, 1, 2, 0]})
    expected = frame.sort("id")
    work = frame.clone()
    out = sort_by_column(work, "id")
    assert_frame_equal(out, expected)
    assert work.width == 0
    single = frame.clone()
    assert_frame_equal(sort_by_column(single, "id", multithreaded=False), expected)
