"""A hand-built claims dataset whose graph is known edge by edge (graph tests only)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl

from medfraud.dataset import write_dataset


def write_hand_dataset(out: Path) -> Path:
    """2 facilities, 2 doctors, 3 patients, 2 pharmacies, 5 claims, 3 prescriptions."""
    claims = pl.DataFrame({
        "claim_id": ["C1", "C2", "C3", "C4", "C5"],
        "patient_id": ["P1", "P1", "P2", "P3", "P2"],
        "doctor_id": ["D1", "D1", "D1", "D2", "D2"],
        "facility_id": ["F1", "F1", "F2", "F2", "F2"],
        "pharmacy_id": ["R1", None, "R1", "R2", None],
        "setting": ["outpatient"] * 5,
        "service_date": [date(2024, 1, 1), date(2024, 1, 5), date(2024, 1, 10), date(2024, 2, 1),
                         date(2024, 3, 1)],
        "admit_date": [None] * 5, "discharge_date": [None] * 5,
        "diagnosis_code": ["J06"] * 5, "drg_group": [None] * 5, "drg_weight": [None] * 5,
        "total_amount": [100.0, 50.0, 30.0, 70.0, 20.0],
        "fund_paid": [80.0, 40.0, 24.0, 56.0, 16.0], "self_paid": [20.0, 10.0, 6.0, 14.0, 4.0],
        "region": ["R01"] * 5, "cross_region": [False] * 5,
        "settled_at": [datetime(2024, 3, 2)] * 5,
    }, schema_overrides={"pharmacy_id": pl.String, "admit_date": pl.Date,
                         "discharge_date": pl.Date, "drg_group": pl.String,
                         "drg_weight": pl.Float64})
    tables = {
        "facilities": pl.DataFrame({"facility_id": ["F1", "F2"], "level": [1, 3],
                                    "ownership": ["public", "private"], "region": ["R01", "R01"]}),
        "doctors": pl.DataFrame({"doctor_id": ["D1", "D2"], "facility_id": ["F1", "F2"],
                                 "department": ["gp", "gp"], "title": ["a", "b"],
                                 "credit_points": [10, 12]}),
        "patients": pl.DataFrame({"patient_id": ["P1", "P2", "P3"], "sex": ["M", "F", "M"],
                                  "birth_date": [date(1970, 1, 1)] * 3, "death_date": [None] * 3,
                                  "region": ["R01"] * 3, "insurance_type": ["urban"] * 3,
                                  "chronic": [False, True, False]},
                                 schema_overrides={"death_date": pl.Date}),
        "pharmacies": pl.DataFrame({"pharmacy_id": ["R1", "R2"], "region": ["R01", "R01"],
                                    "chain_id": [None, "K1"]}, schema_overrides={"chain_id": pl.String}),
        "drugs": pl.DataFrame({"drug_code": ["X01"], "name": ["x"], "category": ["c"],
                               "unit_price": [1.0], "max_daily_units": [3.0], "reimbursable": [True],
                               "sex_restriction": [None], "min_age": [None], "max_age": [None],
                               "restricted_level": [None]},
                              schema_overrides={"sex_restriction": pl.String, "min_age": pl.Int32,
                                                "max_age": pl.Int32, "restricted_level": pl.Int8}),
        "claims": claims,
        "claim_lines": pl.DataFrame({"claim_id": ["C1"], "line_no": [1], "item_type": ["drug"],
                                     "item_code": ["X01"], "quantity": [1.0], "days_supply": [1],
                                     "unit_price": [100.0], "amount": [100.0]}),
        "prescriptions": pl.DataFrame({
            "rx_id": ["X1", "X2", "X3"], "claim_id": ["C1", "C3", "C4"],
            "doctor_id": ["D1", "D1", "D2"], "patient_id": ["P1", "P2", "P3"],
            "pharmacy_id": ["R1", "R1", "R2"],
            "issued_at": [datetime(2024, 1, 1, 9), datetime(2024, 1, 10, 9), datetime(2024, 2, 1, 9)],
            "filled_at": [datetime(2024, 1, 2, 10), None, datetime(2024, 2, 1, 12)],
            "channel": ["flowed", "flowed", "in_hospital"]},
            schema_overrides={"filled_at": pl.Datetime("us")}),
        "pharmacy_purchases": pl.DataFrame({"pharmacy_id": ["R1"], "drug_code": ["X01"],
                                            "purchase_date": [date(2024, 1, 1)], "quantity": [5.0],
                                            "supplier_id": ["OPENING"]}),
        "duty_roster": pl.DataFrame({"doctor_id": ["D1"], "facility_id": ["F1"],
                                     "date": [date(2024, 1, 1)]}),
    }
    return write_dataset(out, tables, seed=0)
