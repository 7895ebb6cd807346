"""Graph-derived features on hand-built frames."""

from __future__ import annotations

import polars as pl
import pytest

from medfraud.features import FeatureParams
from medfraud.features.graph_tabular import hhi, shared_patients


def test_hhi():
    claims = pl.LazyFrame({"doctor_id": ["D1"] * 4 + ["D2"],
                           "pharmacy_id": ["R1", "R1", "R1", "R2", None]})
    out = hhi(claims, "doctor_id", "pharmacy_id", "h").collect().sort("doctor_id")
    # D1: shares 3/4 and 1/4; D2 has only a null pharmacy -> absent
    assert out["doctor_id"].to_list() == ["D1"]
    assert out["h"][0] == pytest.approx(0.75 ** 2 + 0.25 ** 2)


def test_shared_patients():
    claims = pl.LazyFrame({
        "doctor_id": ["D1", "D1", "D1", "D1", "D2", "D2", "D3"],
        "patient_id": ["P1", "P2", "P3", "P4", "P1", "P2", "P9"],
    })
    out = shared_patients(claims, FeatureParams()).collect().sort("doctor_id")
    assert out["top_codoctor_shared_patients"].to_list() == [2, 2, 0]
    assert out["top_codoctor_shared_share"].to_list() == pytest.approx([0.5, 1.0, 0.0])


def test_hub_patients_are_left_out_of_sharing():
    claims = pl.LazyFrame({"doctor_id": ["D1", "D2", "D3"], "patient_id": ["P1"] * 3})
    out = shared_patients(claims, FeatureParams(max_doctors_per_patient=2)).collect()
    assert out["top_codoctor_shared_patients"].to_list() == [0, 0, 0]


def test_graph_columns_in_feature_set(toy_features):
    doctors = toy_features.frame("doctor").sort("doctor_id")
    # D1's pharmacy claims: C2 at R1, C9 at R2
    assert doctors["pharmacy_hhi"][0] == pytest.approx(0.5)
    # D1 and D3 share both of their patients P1 and P3
    assert doctors["top_codoctor_shared_share"].to_list() == pytest.approx([1.0, 0.0, 1.0])
    assert doctors["deg_patients"].to_list() == [2, 1, 2]
