"""Tiny hand-built contract tables for rule tests.

``make_tables`` fills every contract table with a minimal valid world (two patients,
two doctors at two facilities in two regions, one pharmacy, three drugs) plus the
claims and lines a test gives as short dicts; ``run_kind`` evaluates one rule of one
kind over them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from medfraud.dataset import conform
from medfraud.rules import Rule, RuleCatalogue, evaluate_tables

D = date.fromisoformat

PATIENTS = [
    dict(patient_id="P1", sex="M", birth_date=D("1980-06-15"), death_date=None, region="A",
         insurance_type="employee", chronic=False),
    dict(patient_id="P2", sex="F", birth_date=D("2015-03-01"), death_date=None, region="B",
         insurance_type="resident", chronic=True),
]
FACILITIES = [
    dict(facility_id="F1", level=3, ownership="public", region="A"),
    dict(facility_id="F2", level=1, ownership="private", region="B"),
    dict(facility_id="F3", level=2, ownership="public", region="A"),
    dict(facility_id="F4", level=2, ownership="public", region="A"),
]
DOCTORS = [
    dict(doctor_id="D1", facility_id="F1", department="internal", title="attending",
         credit_points=12),
    dict(doctor_id="D2", facility_id="F2", department="emergency", title="resident",
         credit_points=12),
]
PHARMACIES = [dict(pharmacy_id="R1", region="A", chain_id=None)]
DRUGS = [
    # An ordinary drug; a male-only adult drug restricted to level-3 facilities; an antibiotic.
    dict(drug_code="G1", name="ordinary", category="generic", unit_price=10.0,
         max_daily_units=3.0, reimbursable=True, sex_restriction=None, min_age=None,
         max_age=None, restricted_level=None),
    dict(drug_code="G2", name="restricted", category="antidiabetic", unit_price=50.0,
         max_daily_units=1.0, reimbursable=True, sex_restriction="M", min_age=18,
         max_age=None, restricted_level=3),
    dict(drug_code="G3", name="antibiotic", category="antibiotic", unit_price=5.0,
         max_daily_units=2.0, reimbursable=True, sex_restriction=None, min_age=None,
         max_age=None, restricted_level=None),
]


def claim(claim_id: str, day: str = "2024-03-10", *, patient: str = "P1", doctor: str = "D1",
          facility: str = "F1", pharmacy: str | None = None, setting: str = "outpatient",
          amount: float = 100.0, diagnosis: str = "E11.9", admit: str | None = None,
          discharge: str | None = None, drg_group: str | None = None,
          drg_weight: float | None = None, region: str | None = None) -> dict[str, Any]:
    """One claim row; inpatient claims default to a 3-day stay ending on ``day``."""
    service = D(day)
    if setting == "inpatient" and admit is None:
        admit = (service - timedelta(days=3)).isoformat()
        discharge = discharge or day
    region = region or {"F1": "A", "F2": "B", "F3": "A", "F4": "A"}[facility]
    return dict(claim_id=claim_id, patient_id=patient, doctor_id=doctor, facility_id=facility,
                pharmacy_id=pharmacy, setting=setting, service_date=service,
                admit_date=D(admit) if admit else None,
                discharge_date=D(discharge) if discharge else None, diagnosis_code=diagnosis,
                drg_group=drg_group, drg_weight=drg_weight, total_amount=amount,
                fund_paid=round(amount * 0.7, 2), self_paid=round(amount - round(amount * 0.7, 2), 2),
                region=region, cross_region=False,
                settled_at=datetime.combine(service, datetime.min.time()) + timedelta(hours=10))


def line(claim_id: str, line_no: int = 1, *, item_code: str = "G1", item_type: str = "drug",
         quantity: float = 3.0, days_supply: int | None = 1, unit_price: float = 10.0
         ) -> dict[str, Any]:
    return dict(claim_id=claim_id, line_no=line_no, item_type=item_type, item_code=item_code,
                quantity=quantity, days_supply=days_supply, unit_price=unit_price,
                amount=round(quantity * unit_price, 2))


def make_tables(claims: list[dict], lines: list[dict] = (), *, patients: list[dict] | None = None,
                roster: list[dict] | None = None, purchases: list[dict] | None = None,
                doctors: list[dict] | None = None) -> dict[str, pl.DataFrame]:
    """A minimal valid dataset around ``claims`` and ``lines``.

    Without ``roster`` every doctor is on duty at their own facility on every claim date;
    without ``purchases`` the pharmacy opened with 1000 units of every drug.
    """
    doctors = doctors or DOCTORS
    claims_df = pl.DataFrame(claims, schema=None, infer_schema_length=None)
    if roster is None:
        dates = sorted({c["service_date"] for c in claims})
        roster = [dict(doctor_id=d["doctor_id"], facility_id=d["facility_id"], date=day)
                  for d in doctors for day in dates]
    if purchases is None:
        purchases = [dict(pharmacy_id="R1", drug_code=d["drug_code"], purchase_date=D("2024-01-01"),
                          quantity=1000.0, supplier_id="OPENING") for d in DRUGS]
    lines = list(lines)
    # One prescription per claim (the contract requires a non-empty table); claims without
    # a pharmacy are dispensed in hospital, recorded against pharmacy R1.
    rx = [dict(rx_id=f"X{c['claim_id']}", claim_id=c["claim_id"], doctor_id=c["doctor_id"],
               patient_id=c["patient_id"], pharmacy_id=c["pharmacy_id"] or "R1",
               issued_at=c["settled_at"], filled_at=c["settled_at"],
               channel="flowed" if c["pharmacy_id"] else "in_hospital")
          for c in claims]
    raw = {
        "patients": pl.DataFrame(patients or PATIENTS),
        "facilities": pl.DataFrame(FACILITIES),
        "doctors": pl.DataFrame(doctors),
        "pharmacies": pl.DataFrame(PHARMACIES, schema={"pharmacy_id": pl.String, "region": pl.String,
                                                       "chain_id": pl.String}),
        "drugs": pl.DataFrame(DRUGS),
        "claims": claims_df,
        "claim_lines": pl.DataFrame(lines, schema=_schema("claim_lines")) if lines else
        pl.DataFrame(schema=_schema("claim_lines")),
        "prescriptions": pl.DataFrame(rx, schema=_schema("prescriptions")),
        "pharmacy_purchases": pl.DataFrame(purchases, schema=_schema("pharmacy_purchases")),
        "duty_roster": pl.DataFrame(roster, schema=_schema("duty_roster")),
    }
    return {name: conform(name, frame.with_columns(
        [pl.col(c).cast(t) for c, t in _schema(name).items() if c in frame.columns]))
        for name, frame in raw.items()}


def _schema(table: str) -> dict[str, pl.DataType]:
    from medfraud.schema import TABLES

    return TABLES[table].columns


def run_kind(kind: str, tables: dict[str, pl.DataFrame], params: dict | None = None, *,
             level: str = "claim", window: tuple[date, date] | None = None) -> pl.DataFrame:
    """Hits of a one-rule catalogue holding ``kind`` with ``params``."""
    rule = Rule(id="T001", name_zh="测试", name_en="test", kind=kind, params=params or {},
                reason_code="TEST", stage="事中", severity=2, result_class="违规", level=level)
    return evaluate_tables(tables, RuleCatalogue(rules=[rule]), window)


def hit_ids(hits: pl.DataFrame) -> list[str]:
    return sorted(hits["id"].to_list())


def stake(hits: pl.DataFrame, hit_id: str) -> float:
    return hits.filter(pl.col("id") == hit_id)["amount_at_stake"].item()
