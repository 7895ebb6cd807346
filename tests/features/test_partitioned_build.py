"""Partitioned claim features (patient-hash partitions spilled to Parquet) equal the
single-pass result; the column-wise sort equals DataFrame.sort."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import medfraud.features.claims as claims_module
from medfraud.features import _sort_by_column, build_features


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


def test_sort_by_column_matches_sort_and_empties_input():
    frame = pl.DataFrame({"id": ["c", "a", "b", "a0"], "x": [3.0, 1.0, 2.0, 0.5],
                          "n": [3, 1, 2, 0]})
    expected = frame.sort("id")
    work = frame.clone()
    out = _sort_by_column(work, "id")
    assert_frame_equal(out, expected)
    assert work.width == 0
