"""build_features: contract of the returned FeatureSet, label-freedom, windows, errors."""

from __future__ import annotations

import shutil
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from medfraud.dataset import Dataset
from medfraud.features import FeatureSet, build_features, feature_columns
from medfraud.features.claims import CONTEXT_COLUMNS
from medfraud.schema import LABEL_TABLES, LEVEL_ID, LEVELS, SETTINGS, DataError

NUMERIC = (pl.Float64, pl.Float32, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16,
           pl.UInt32, pl.UInt64)


def check_feature_set(features: FeatureSet) -> None:
    """Shape/dtype contract shared by the toy and tiny datasets."""
    assert features.levels == list(LEVELS)
    for level in LEVELS:
        frame = features.frame(level)
        cols = features.columns[level]
        assert cols == feature_columns(level)
        expected = [LEVEL_ID[level]] + (CONTEXT_COLUMNS if level == "claim" else []) + cols
        assert frame.columns == expected
        assert frame[LEVEL_ID[level]].is_unique().all()
        for name in cols:
            assert frame.schema[name] in NUMERIC, f"{level}.{name} is {frame.schema[name]}"
        # Claim features are stored narrow (Float32, Int16 / UInt16 counts and days, Int8
        # flags), patient features Float32; the other entity levels' aggregates stay
        # Float64; money keeps its contract dtype everywhere.
        not_of_level = {"claim": (pl.Float64, pl.Int32, pl.Int64, pl.UInt32, pl.UInt64),
                        "patient": (pl.Float64,)}.get(level, (pl.Float32,))
        unexpected = [name for name in cols if frame.schema[name] in not_of_level]
        assert not unexpected, f"{level}: {unexpected} are not of the level's width"
        if level == "claim":
            assert frame.schema["total_amount"] == frame.schema["fund_paid"] == pl.Float64
            assert frame.schema["setting"] == pl.Enum(sorted(SETTINGS))
        nulls = {c: n for c, n in frame.select(cols).null_count().row(0, named=True).items() if n}
        assert not nulls, f"{level}: null feature values {nulls}"
        matrix = features.matrix(level)
        assert matrix.shape == (frame.height, len(cols))
        import numpy as np
        assert np.isfinite(matrix).all(), f"{level}: non-finite feature values"


def _without_labels(path, tmp_path):
    copy = tmp_path / "no_labels"
    shutil.copytree(path, copy)
    for table in LABEL_TABLES:
        shutil.rmtree(copy / table, ignore_errors=True)
    assert not Dataset(copy).labels_available()
    return Dataset(copy)


def _assert_same(a: FeatureSet, b: FeatureSet) -> None:
    assert a.columns == b.columns
    for level in a.levels:
        assert_frame_equal(a.frame(level), b.frame(level))


def test_toy_contract(toy_features):
    check_feature_set(toy_features)
    assert toy_features.frame("claim").height == 9
    assert toy_features.frame("patient").height == 3


def test_label_tables_never_read(toy_dataset, toy_dataset_path, toy_features, tmp_path,
                                 monkeypatch):
    without = build_features(_without_labels(toy_dataset_path, tmp_path))
    _assert_same(toy_features, without)
    # And no scan of a label table is even attempted.
    original = Dataset.scan

    def guarded(self, table):
        assert table not in LABEL_TABLES, f"features read label table {table}"
        return original(self, table)

    monkeypatch.setattr(Dataset, "scan", guarded)
    _assert_same(toy_features, build_features(toy_dataset))


def test_window_is_respected(toy_dataset):
    window = (date(2024, 1, 1), date(2024, 1, 31))
    features = build_features(toy_dataset, window)
    claims = features.frame("claim")
    assert sorted(claims["claim_id"]) == ["C1", "C2", "C3", "C9"]
    assert claims["service_date"].is_between(*window).all()
    # entities with at least one claim in the window, and only those
    assert features.ids("patient").to_list() == ["P1"]
    assert features.ids("doctor").to_list() == ["D1", "D3"]
    assert features.ids("pharmacy").to_list() == ["R1", "R2"]
    # counts only from the window: P1 has 4 claims overall, all in January
    assert features.frame("doctor").filter(pl.col("doctor_id") == "D1")["n_claims"][0] == 3


def test_levels_subset_and_determinism(toy_dataset, toy_features):
    subset = build_features(toy_dataset, levels=["pharmacy", "claim"])
    assert subset.levels == ["pharmacy", "claim"]
    assert_frame_equal(subset.frame("claim"), toy_features.frame("claim"))
    assert_frame_equal(subset.frame("pharmacy"), toy_features.frame("pharmacy"))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"levels": ["ward"]}, ValueError, "levels must be"),
    ({"levels": []}, ValueError, "levels must be"),
    ({"window": (date(2024, 2, 1), date(2024, 1, 1))}, ValueError, "starts after it ends"),
    ({"window": ("2024-01-01", "2024-02-01")}, TypeError, "window must be"),
    ({"window": (date(2030, 1, 1), date(2030, 2, 1))}, ValueError, "no claims"),
    ({"reference_window": (date(2024, 2, 1), date(2024, 1, 1))}, ValueError,
     "reference_window starts after"),
])
def test_bad_arguments(toy_dataset, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_features(toy_dataset, **kwargs)


def test_precomputed_claim_reference_gives_the_same_features(toy_dataset):
    """A claim reference fitted once equals the one build_features fits from its window,
    for every level; a reference of another window is refused."""
    from medfraud.features import claim_reference

    reference_window = (date(2024, 1, 1), date(2024, 1, 31))
    window = (date(2024, 2, 1), date(2024, 3, 31))
    reference = claim_reference(toy_dataset, reference_window)
    fitted_here = build_features(toy_dataset, window, reference_window=reference_window)
    reused = build_features(toy_dataset, window, claim_reference=reference)
    for level in LEVELS:
        assert_frame_equal(reused.frame(level), fitted_here.frame(level))
    assert reused.meta["reference_window"] == reference_window
    # the reference matters: fitted on the window itself, the peer features differ
    assert not reused.frame("claim").equals(build_features(toy_dataset, window).frame("claim"))
    with pytest.raises(ValueError, match="differs from the window of claim_reference"):
        build_features(toy_dataset, window, reference_window=window, claim_reference=reference)


def test_missing_table_is_named(toy_dataset_path, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(toy_dataset_path, copy)
    shutil.rmtree(copy / "duty_roster")
    with pytest.raises(FileNotFoundError, match="duty_roster"):
        build_features(Dataset(copy))


def test_unknown_setting_is_reported_like_the_validator(toy_dataset_path, tmp_path):
    # build_features expects a validated dataset; one that skipped `medfraud validate` with
    # an unknown setting gets the validator's report, not polars' cast error.
    copy = tmp_path / "bad_setting"
    shutil.copytree(toy_dataset_path, copy)
    claims = pl.read_parquet(copy / "claims")
    bad_id = claims["claim_id"][3]
    shutil.rmtree(copy / "claims")
    (copy / "claims").mkdir()
    claims.with_columns(pl.when(pl.col("claim_id") == bad_id).then(pl.lit("teleconsult"))
                        .otherwise(pl.col("setting")).alias("setting")) \
        .write_parquet(copy / "claims" / "part-0.parquet")
    with pytest.raises(DataError, match=r"claims\.setting: setting must be one of .*"
                                        r"\(1 bad row\(s\)\); example: .*teleconsult") as info:
        build_features(Dataset(copy))
    assert bad_id in str(info.value)


# --- the generated tiny preset -------------------------------------------------------------

def _generator_ready() -> bool:
    try:
        import data_synth
    except ImportError:
        return False
    return hasattr(data_synth, "load_config") and hasattr(data_synth, "generate")


tiny = pytest.mark.skipif(not _generator_ready(), reason="data_synth generator not available yet")


@pytest.fixture(scope="module")
def tiny_features(tiny_dataset):
    return build_features(tiny_dataset)


@tiny
def test_tiny_contract(tiny_dataset, tiny_features):
    check_feature_set(tiny_features)
    n_claims = tiny_dataset.scan("claims").select(pl.len()).collect().item()
    assert tiny_features.frame("claim").height == n_claims
    n_patients = (tiny_dataset.scan("claims").select(pl.col("patient_id").n_unique())
                  .collect().item())
    assert tiny_features.frame("patient").height == n_patients


@tiny
def test_tiny_label_free(tiny_dataset_path, tiny_features, tmp_path):
    _assert_same(tiny_features, build_features(_without_labels(tiny_dataset_path, tmp_path)))


@tiny
def test_tiny_window_and_reference(tiny_dataset):
    span = tiny_dataset.scan("claims").select(pl.col("service_date").min().alias("a"),
                                              pl.col("service_date").max().alias("b")).collect()
    first, last = span["a"][0], span["b"][0]
    middle = first + (last - first) / 2
    train, test = (first, middle), (middle + (date(2000, 1, 2) - date(2000, 1, 1)), last)
    scored = build_features(tiny_dataset, test, reference_window=train)
    claims = scored.frame("claim")
    assert claims.height > 0
    assert claims["service_date"].is_between(*test).all()
    outside = tiny_dataset.scan("claims").filter(~pl.col("service_date").is_between(*test)) \
        .select("claim_id").collect()
    assert claims.join(outside, on="claim_id", how="semi").height == 0
    own = build_features(tiny_dataset, test)
    # same rows, different peer statistics
    assert_frame_equal(own.frame("claim").select("claim_id", "n_lines"),
                       claims.select("claim_id", "n_lines"))
    assert not own.frame("claim")["amount_dx_z"].equals(claims["amount_dx_z"])
    check_feature_set(scored)
