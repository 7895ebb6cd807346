"""A minimal, valid set of contract tables built by hand, for tests that break one thing."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl


def valid_tables() -> dict[str, pl.DataFrame]:
    """Two patients, two doctors, one facility, one pharmacy, two drugs, three claims."""
    return {
        "patients": pl.DataFrame({
            "patient_id": ["P1", "P2"], "sex": ["M", "F"],
            "birth_date": [date(1960, 1, 1), date(1990, 5, 5)], "death_date": [None, None],
            "region": ["R01", "R02"], "insurance_type": ["employee", "resident"],
            "chronic": [True, False]}),
        "facilities": pl.DataFrame({"facility_id": ["F1"], "level": [2], "ownership": ["public"],
                                    "region": ["R01"]}),
        "doctors": pl.DataFrame({"doctor_id": ["D1", "D2"], "facility_id": ["F1", "F1"],
                                 "department": ["internal", "surgery"], "title": ["attending", "chief"],
                                 "credit_points": [12, 12]}),
        "pharmacies": pl.DataFrame({"pharmacy_id": ["R1"], "region": ["R01"], "chain_id": [None]},
                                   schema_overrides={"chain_id": pl.String}),
        "drugs": pl.DataFrame({
            "drug_code": ["X1", "X2"], "name": ["metformin", "insulin"], "category": ["diabetes"] * 2,
            "unit_price": [1.5, 80.0], "max_daily_units": [3.0, 2.0], "reimbursable": [True, True],
            "sex_restriction": [None, None], "min_age": [None, 18], "max_age": [None, None],
            "restricted_level": [None, 2]},
            schema_overrides={"sex_restriction": pl.String, "max_age": pl.Int32}),
        "claims": pl.DataFrame({
            "claim_id": ["C1", "C2", "C3"], "patient_id": ["P1", "P2", "P1"],
            "doctor_id": ["D1", "D2", "D1"], "facility_id": ["F1", "F1", "F1"],
            "pharmacy_id": ["R1", None, None], "setting": ["outpatient", "inpatient", "outpatient"],
            "service_date": [date(2024, 1, 3), date(2024, 1, 5), date(2024, 2, 1)],
            "admit_date": [None, date(2024, 1, 5), None],
            "discharge_date": [None, date(2024, 1, 9), None],
            "diagnosis_code": ["E11", "K35", "E11"], "drg_group": [None, "GB1", None],
            "drg_weight": [None, 1.2, None], "total_amount": [13.5, 5000.0, 9.0],
            "fund_paid": [10.0, 4000.0, 7.0], "self_paid": [3.5, 1000.0, 2.0],
            "region": ["R01", "R01", "R01"], "cross_region": [False, False, False],
            "settled_at": [datetime(2024, 1, 3, 10), datetime(2024, 1, 9, 15), datetime(2024, 2, 1, 9)]},
            schema_overrides={"drg_weight": pl.Float64}),
        "claim_lines": pl.DataFrame({
            "claim_id": ["C1", "C2", "C3"], "line_no": [1, 1, 1],
            "item_type": ["drug", "bed", "drug"], "item_code": ["X1", "BED", "X1"],
            "quantity": [9.0, 4.0, 6.0], "days_supply": [3, None, 2],
            "unit_price": [1.5, 1250.0, 1.5], "amount": [13.5, 5000.0, 9.0]}),
        "prescriptions": pl.DataFrame({
            "rx_id": ["RX1"], "claim_id": ["C1"], "doctor_id": ["D1"], "patient_id": ["P1"],
            "pharmacy_id": ["R1"], "issued_at": [datetime(2024, 1, 3, 9)],
            "filled_at": [datetime(2024, 1, 3, 11)], "channel": ["flowed"]}),
        "pharmacy_purchases": pl.DataFrame({
            "pharmacy_id": ["R1"], "drug_code": ["X1"], "purchase_date": [date(2024, 1, 1)],
            "quantity": [100.0], "supplier_id": ["OPENING"]}),
        "duty_roster": pl.DataFrame({"doctor_id": ["D1", "D2", "D1"], "facility_id": ["F1"] * 3,
                                     "date": [date(2024, 1, 3), date(2024, 1, 5), date(2024, 2, 1)]}),
        "labels_claims": pl.DataFrame({"claim_id": ["C2"], "typology": ["upcoding"],
                                       "ring_id": [None]}, schema_overrides={"ring_id": pl.String}),
        "labels_entities": pl.DataFrame({"entity_type": ["facility"], "entity_id": ["F1"],
                                         "typology": ["upcoding"], "ring_id": [None]},
                                        schema_overrides={"ring_id": pl.String}),
        "audited": pl.DataFrame({"entity_type": ["claim"], "entity_id": ["C2"],
                                 "audited_on": [date(2024, 3, 1)], "is_fraud": [True],
                                 "typology": ["upcoding"]}),
    }
