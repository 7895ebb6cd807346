"""Partitioned claim features (patient-hash partitions spilled to Parquet) equal the
single-pass result."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import medfraud.features as features_module
import medfraud.features.claims as claims_module
from medfraud.features import build_features


def _frames(dataset, **kwargs):
    return build_features(dataset, **kwargs).frames


@pytest.mark.parametrize("windows", [
    {},
    {"window": (date(2024, 4, 1), date(2024, 9, 30)),
     "reference_window": (date(2024, 1, 1), date(2024, 6, 30))},
])
def test_partitioned_build_equals_single_pass(tiny_dataset, monkeypatch, windows):
    whole = _frames(tiny_dataset, **windows)
    # ~7 partitions on the tiny preset: every partition path (spill, per-partition
    # peer statistics, doctor-day join, concatenation) runs.
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 1_000)
    parts = _frames(tiny_dataset, **windows)
    assert whole.keys() == parts.keys()
    for level in whole:
        assert_frame_equal(whole[level], parts[level], check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)


def test_partitioned_build_on_toy_data(toy_dataset, monkeypatch):
    whole = _frames(toy_dataset)
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 2)
    parts = _frames(toy_dataset)
    for level in whole:
        assert_frame_equal(whole[level], parts[level], check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)


def test_partitioned_build_with_claims_stored_out_of_order(toy_dataset, tmp_path, monkeypatch):
    """Claims not stored in claim_id order: the partitioned result is still sorted by
    claim_id (string sort fallback) and equals the single-pass result."""
    from medfraud.dataset import Dataset, write_dataset
    from medfraud.features._common import DATA_TABLES

    tables = {t: toy_dataset.scan(t).collect() for t in DATA_TABLES if toy_dataset.has(t)}
    tables["claims"] = tables["claims"].reverse()
    shuffled = Dataset(write_dataset(tmp_path / "reversed", tables, seed=0))
    whole = _frames(toy_dataset)
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", 2)
    parts = _frames(shuffled)
    assert parts["claim"]["claim_id"].is_sorted()
    for level in whole:
        assert_frame_equal(whole[level], parts[level], check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)


@pytest.mark.parametrize(("name", "per_partition"), [("toy_dataset", 3),
                                                      ("tiny_dataset", 1_000)])
def test_claim_frame_order_follows_the_scan_when_sorted(request, monkeypatch, name,
                                                        per_partition):
    """With claims stored in claim_id order the partitions are put back in order by their
    scan position (integer sort), with no string sort after it — same frame as the single
    pass."""
    dataset = request.getfixturevalue(name)
    whole = _frames(dataset, levels=["claim"])
    monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", per_partition)
    calls = []

    def spy(original):
        def sort(frame, key):
            calls.append(key)
            return original(frame, key)
        return sort

    monkeypatch.setattr(claims_module, "sort_by_column", spy(claims_module.sort_by_column))
    monkeypatch.setattr(features_module, "_sort_by_column", spy(features_module._sort_by_column))
    parts = _frames(dataset, levels=["claim"])
    assert calls == ["_row"]
    assert_frame_equal(whole["claim"], parts["claim"], check_exact=False, rel_tol=1e-9,
                       abs_tol=1e-9)


@pytest.mark.parametrize("per_partition", [None, 3])
def test_string_key_fallback_gives_the_same_features(toy_dataset, monkeypatch, per_partition):
    """Hashed keys fall back to the string columns when two values collide: that path (forced
    here) gives the same frames, with and without partitions."""
    whole = _frames(toy_dataset)
    if per_partition:
        monkeypatch.setattr(claims_module, "CLAIMS_PER_PARTITION", per_partition)
    monkeypatch.setattr(claims_module, "_injective_key", lambda frame, column, key: frame.hstack(
        [frame.get_column(column).alias(key)]))
    monkeypatch.setattr(claims_module, "_claim_key", lambda claims: pl.col("claim_id"))
    fallback = _frames(toy_dataset)
    for level in whole:
        assert_frame_equal(whole[level], fallback[level], check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)
