"""A hand-built toy dataset whose feature values are known by hand (see test_*.py)."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from medfraud.dataset import Dataset, write_dataset

D = date


def _claim(cid, pid, did, fid, setting, day, amount, region="A", rx=None, dx="I10",
           admit=None, discharge=None, drg=None, weight=None, hour=10):
    return {"claim_id": cid, "patient_id": pid, "doctor_id": did, "facility_id": fid,
            "pharmacy_id": rx, "setting": setting, "service_date": day, "admit_date": admit,
            "discharge_date": discharge, "diagnosis_code": dx, "drg_group": drg,
            "drg_weight": weight, "total_amount": amount, "fund_paid": amount * 0.7,
            "self_paid": amount * 0.3, "region": region, "cross_region": region != "A",
            "settled_at": datetime(day.year, day.month, day.day, hour)}


def toy_tables() -> dict[str, pl.DataFrame]:
    patients = pl.DataFrame({
        "patient_id": ["P1", "P2", "P3"], "sex": ["M", "F", "F"],
        "birth_date": [D(1980, 1, 1), D(2015, 6, 1), D(1950, 1, 1)],
        "death_date": [None, D(2024, 3, 10), None], "region": ["A", "A", "A"],
        "insurance_type": ["employee", "resident", "resident"], "chronic": [False, False, True],
    })
    facilities = pl.DataFrame({"facility_id": ["F1", "F2"], "level": [3, 1],
                               "ownership": ["public", "private"], "region": ["A", "B"]})
    doctors = pl.DataFrame({"doctor_id": ["D1", "D2", "D3"], "facility_id": ["F1", "F1", "F2"],
                            "department": ["internal", "Emergency", "internal"],
                            "title": ["attending"] * 3, "credit_points": [12, 12, 12]})
    pharmacies = pl.DataFrame({"pharmacy_id": ["R1", "R2"], "region": ["A", "B"],
                               "chain_id": ["X", None]})
    drugs = pl.DataFrame({
        "drug_code": ["G1", "G2", "G3"] + [f"G{i}" for i in range(4, 11)],
        "name": [f"drug{i}" for i in range(1, 11)], "category": ["x"] * 10,
        "unit_price": [10.0, 100.0, 5.0] + [1.0, 2, 3, 4, 6, 7, 8],
        "max_daily_units": [3.0, 1.0, 2.0] + [1.0] * 7, "reimbursable": [True] * 10,
        "sex_restriction": [None, "M", None] + [None] * 7,
        "min_age": [None, None, 18] + [None] * 7, "max_age": [None] * 10,
        "restricted_level": [None, None, None, 3] + [None] * 6,
    })
    claims = pl.DataFrame([
        _claim("C1", "P1", "D1", "F1", "outpatient", D(2024, 1, 5), 100.0, hour=23),
        _claim("C2", "P1", "D1", "F1", "pharmacy", D(2024, 1, 8), 200.0, rx="R1"),
        _claim("C3", "P1", "D3", "F2", "outpatient", D(2024, 1, 8), 50.0, region="B"),
        _claim("C4", "P2", "D2", "F1", "outpatient", D(2024, 3, 15), 300.0),
        _claim("C5", "P3", "D1", "F1", "inpatient", D(2024, 2, 11), 10000.0, dx="J18",
               admit=D(2024, 2, 1), discharge=D(2024, 2, 11), drg="DRG1", weight=1.5),
        _claim("C6", "P3", "D1", "F1", "inpatient", D(2024, 2, 25), 12000.0, dx="J18",
               admit=D(2024, 2, 20), discharge=D(2024, 2, 25), drg="DRG1", weight=2.5),
        _claim("C7", "P3", "D3", "F2", "outpatient", D(2024, 2, 22), 80.0),
        _claim("C8", "P3", "D1", "F1", "inpatient", D(2024, 2, 28), 9000.0, dx="K35",
               admit=D(2024, 2, 24), discharge=D(2024, 2, 28), drg="DRG2", weight=1.0),
        _claim("C9", "P1", "D1", "F1", "pharmacy", D(2024, 1, 8), 30.0, region="B", rx="R2"),
    ])
    line_rows = [
        # claim, line, type, item, qty, days, price
        ("C1", 1, "drug", "G1", 30.0, 5, 10.0), ("C1", 2, "drug", "G1", 30.0, 5, 10.0),
        ("C2", 1, "drug", "G1", 15.0, 10, 10.0), ("C2", 2, "drug", "G2", 1.0, 1, 100.0),
        ("C3", 1, "exam", "E1", 1.0, None, 50.0),
        ("C4", 1, "drug", "G2", 2.0, 5, 100.0), ("C4", 2, "drug", "G3", 2.0, 1, 5.0),
        ("C5", 1, "bed", "B1", 10.0, None, 100.0), ("C5", 2, "treatment", "T1", 1.0, None, 4000.0),
        ("C5", 3, "treatment", "T2", 1.0, None, 5000.0),
        ("C6", 1, "bed", "B1", 5.0, None, 100.0), ("C6", 2, "treatment", "T1", 1.0, None, 11500.0),
        ("C7", 1, "exam", "E1", 1.0, None, 80.0),
        ("C8", 1, "bed", "B1", 4.0, None, 100.0), ("C8", 2, "treatment", "T3", 1.0, None, 8600.0),
        ("C9", 1, "drug", "G1", 3.0, 1, 10.0),
    ]
    lines = pl.DataFrame(line_rows, schema=["claim_id", "line_no", "item_type", "item_code",
                                            "quantity", "days_supply", "unit_price"], orient="row")
    lines = lines.with_columns((pl.col("quantity") * pl.col("unit_price")).alias("amount"))
    prescriptions = pl.DataFrame({
        "rx_id": ["X1", "X2"], "claim_id": ["C2", "C9"], "doctor_id": ["D1", "D1"],
        "patient_id": ["P1", "P1"], "pharmacy_id": ["R1", "R2"],
        "issued_at": [datetime(2024, 1, 8, 9), datetime(2024, 1, 8, 9)],
        "filled_at": [datetime(2024, 1, 8, 11), None], "channel": ["flowed", "flowed"],
    })
    purchases = pl.DataFrame({
        "pharmacy_id": ["R1", "R1", "R1", "R2"], "drug_code": ["G1", "G1", "G2", "G3"],
        "purchase_date": [D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 1), D(2024, 1, 1)],
        "quantity": [10.0, 5.0, 4.0, 100.0], "supplier_id": ["OPENING", "S1", "OPENING", "OPENING"],
    })
    roster = pl.DataFrame({
        "doctor_id": ["D1", "D1", "D1", "D1", "D1", "D2"],
        "facility_id": ["F1", "F1", "F1", "F1", "F1", "F2"],
        "date": [D(2024, 1, 5), D(2024, 1, 8), D(2024, 2, 11), D(2024, 2, 25), D(2024, 2, 28),
                 D(2024, 3, 15)],
    })
    labels_claims = pl.DataFrame({"claim_id": ["C4"], "typology": ["phantom_patient"],
                                  "ring_id": [None]}, schema_overrides={"ring_id": pl.String})
    labels_entities = pl.DataFrame({"entity_type": ["patient"], "entity_id": ["P2"],
                                    "typology": ["phantom_patient"], "ring_id": [None]},
                                   schema_overrides={"ring_id": pl.String})
    audited = pl.DataFrame({"entity_type": ["claim"], "entity_id": ["C4"],
                            "audited_on": [D(2024, 4, 1)], "is_fraud": [True],
                            "typology": ["phantom_patient"]})
    return {"patients": patients, "facilities": facilities, "doctors": doctors,
            "pharmacies": pharmacies, "drugs": drugs, "claims": claims, "claim_lines": lines,
            "prescriptions": prescriptions, "pharmacy_purchases": purchases, "duty_roster": roster,
            "labels_claims": labels_claims, "labels_entities": labels_entities, "audited": audited}


@pytest.fixture(scope="session")
def toy_dataset_path(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("toy") / "dataset", toy_tables(), seed=0)


@pytest.fixture(scope="session")
def toy_dataset(toy_dataset_path):
    return Dataset(toy_dataset_path)


@pytest.fixture(scope="session")
def toy_features(toy_dataset):
    from medfraud.features import build_features

    return build_features(toy_dataset)
