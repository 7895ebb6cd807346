"""Synthesise a contract-valid dataset of N claims directly with numpy/polars (benchmarks only).

Shapes follow a mid-size province: ~10 claims per patient, ~500 per doctor, 2 lines per
claim on average, 12 months, a duty roster of ~70 % of days.  Values are random but valid;
they exercise every join and window of the feature code at the right cardinalities.
Written in shards through :class:`medfraud.dataset.DatasetWriter` so memory stays flat.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from medfraud.dataset import DatasetWriter

START = date(2024, 1, 1)
DAYS = 366
SHARD = 1_000_000


def _ids(prefix: str, idx: pl.Expr | np.ndarray, width: int) -> pl.Expr:
    expr = pl.lit(pl.Series(idx)) if isinstance(idx, np.ndarray) else idx
    return pl.lit(prefix) + expr.cast(pl.String).str.zfill(width)


def sizes(n_claims: int) -> dict[str, int]:
    return {"patients": max(n_claims // 10, 100), "doctors": max(n_claims // 500, 20),
            "facilities": max(n_claims // 10_000, 5), "pharmacies": max(n_claims // 2_000, 5),
            "drugs": 2_000, "diagnoses": 500, "drg": 300, "regions": 20}


def _reference_tables(rng: np.random.Generator, n: dict[str, int]) -> dict[str, pl.DataFrame]:
    nf, nd, npat, nph, ndr = (n["facilities"], n["doctors"], n["patients"], n["pharmacies"],
                              n["drugs"])
    regions = np.array([f"REG{i:02d}" for i in range(n["regions"])])
    facilities = pl.DataFrame({
        "facility_id": pl.select(_ids("F", np.arange(nf), 6)).to_series(),
        "level": rng.integers(1, 4, nf).astype(np.int8),
        "ownership": rng.choice(["public", "private"], nf), "region": rng.choice(regions, nf)})
    doctor_facility = rng.integers(0, nf, nd)
    doctors = pl.DataFrame({
        "doctor_id": pl.select(_ids("D", np.arange(nd), 7)).to_series(),
        "facility_id": pl.select(_ids("F", doctor_facility, 6)).to_series(),
        "department": rng.choice(["internal", "surgery", "pediatrics", "emergency", "tcm"], nd),
        "title": rng.choice(["resident", "attending", "chief"], nd),
        "credit_points": rng.integers(0, 13, nd).astype(np.int32)})
    birth = rng.integers(-30_000, -365, npat)
    death = np.where(rng.random(npat) < 0.01, rng.integers(0, DAYS, npat), -1)
    patients = pl.DataFrame({
        "_i": np.arange(npat), "sex": rng.choice(["M", "F"], npat), "_birth": birth,
        "_death": death, "region": rng.choice(regions, npat),
        "insurance_type": rng.choice(["employee", "resident"], npat),
        "chronic": rng.random(npat) < 0.15}).select(
        _ids("P", pl.col("_i"), 9).alias("patient_id"), "sex",
        (pl.lit(START) + pl.duration(days=pl.col("_birth"))).alias("birth_date"),
        pl.when(pl.col("_death") >= 0).then(pl.lit(START) + pl.duration(days=pl.col("_death")))
        .alias("death_date"), "region", "insurance_type", "chronic")
    pharmacies = pl.DataFrame({
        "pharmacy_id": pl.select(_ids("R", np.arange(nph), 6)).to_series(),
        "region": rng.choice(regions, nph),
        "chain_id": rng.choice(["K1", "K2", "K3", ""], nph)}).with_columns(
        pl.when(pl.col("chain_id") != "").then(pl.col("chain_id")).alias("chain_id"))
    price = np.round(rng.lognormal(3.0, 1.2, ndr), 2)
    sex = pl.Series(np.where(rng.random(ndr) < 0.03, rng.choice(["M", "F"], ndr), "")) \
        .replace("", None)
    drugs = pl.DataFrame({
        "drug_code": pl.select(_ids("G", np.arange(ndr), 5)).to_series(),
        "name": [f"drug {i}" for i in range(ndr)], "category": rng.choice(["a", "b", "c"], ndr),
        "unit_price": price, "max_daily_units": rng.integers(1, 6, ndr).astype(float),
        "reimbursable": rng.random(ndr) < 0.9, "sex_restriction": sex,
        "min_age": pl.Series(np.where(rng.random(ndr) < 0.05, 18, -1)),
        "max_age": pl.Series(np.where(rng.random(ndr) < 0.02, 12, -1)),
        "restricted_level": pl.Series(np.where(rng.random(ndr) < 0.05, 3, -1))}).with_columns(
        pl.when(pl.col(c) >= 0).then(pl.col(c)).alias(c)
        for c in ("min_age", "max_age", "restricted_level")).with_columns(
        pl.col("min_age").cast(pl.Int32), pl.col("max_age").cast(pl.Int32),
        pl.col("restricted_level").cast(pl.Int8))
    # Duty roster: each doctor on ~70 % of days at their own facility.
    on = rng.random((nd, DAYS)) < 0.7
    doc_idx, day_idx = np.nonzero(on)
    roster = pl.DataFrame({"_d": doc_idx, "_f": doctor_facility[doc_idx], "_day": day_idx}) \
        .select(_ids("D", pl.col("_d"), 7).alias("doctor_id"),
                _ids("F", pl.col("_f"), 6).alias("facility_id"),
                (pl.lit(START) + pl.duration(days=pl.col("_day"))).alias("date"))
    # Purchases: 50 drugs per pharmacy, an opening row and 12 monthly deliveries each.
    ph = np.repeat(np.arange(nph), 50)
    dr = rng.integers(0, ndr, ph.size)
    purchases = pl.DataFrame({"_p": np.tile(ph, 13), "_g": np.tile(dr, 13),
                              "_m": np.repeat(np.arange(13), ph.size),
                              "quantity": rng.integers(10, 500, ph.size * 13).astype(float)}) \
        .unique(["_p", "_g", "_m"]).select(
        _ids("R", pl.col("_p"), 6).alias("pharmacy_id"), _ids("G", pl.col("_g"), 5)
        .alias("drug_code"),
        pl.when(pl.col("_m") == 0).then(pl.lit(START))
        .otherwise(pl.date(2024, pl.col("_m").clip(1, 12), 1)).alias("purchase_date"),
        "quantity",
        pl.when(pl.col("_m") == 0).then(pl.lit("OPENING")).otherwise(pl.lit("S1"))
        .alias("supplier_id"))
    return {"facilities": facilities, "doctors": doctors, "patients": patients,
            "pharmacies": pharmacies, "drugs": drugs, "duty_roster": roster,
            "pharmacy_purchases": purchases}, doctor_facility, price


def _claim_shard(rng, n: dict[str, int], offset: int, size: int, doctor_facility: np.ndarray,
                 drug_price: np.ndarray) -> dict[str, pl.DataFrame]:
    idx = np.arange(offset, offset + size)
    patient = rng.integers(0, n["patients"], size)
    # Patients mostly see their 3 regular doctors and use their regular pharmacy (as real
    # patients do); the rest of their claims go anywhere.
    regular = (patient * 7919 + rng.integers(0, 3, size) * 104_729) % n["doctors"]
    doc = np.where(rng.random(size) < 0.8, regular, rng.integers(0, n["doctors"], size))
    pharmacy_of = np.where(rng.random(size) < 0.7, (patient * 31) % n["pharmacies"],
                           rng.integers(0, n["pharmacies"], size))
    setting = rng.choice(["outpatient", "pharmacy", "inpatient", "online"], size,
                         p=[0.5, 0.3, 0.05, 0.15])
    inpatient = setting == "inpatient"
    pharmacy = setting == "pharmacy"
    day = rng.integers(0, DAYS, size)
    los = rng.integers(1, 15, size)
    amount = np.round(rng.lognormal(5.0, 1.0, size) * np.where(inpatient, 30, 1), 2)
    fund = np.round(amount * rng.uniform(0.5, 0.9, size), 2)
    hour = rng.integers(0, 24, size)
    claims = pl.DataFrame({
        "_i": idx, "_p": patient, "_d": doc,
        "_f": doctor_facility[doc], "_r": pharmacy_of,
        "setting": setting, "_day": day, "_los": los, "_inp": inpatient, "_ph": pharmacy,
        "_dx": rng.integers(0, n["diagnoses"], size), "_drg": rng.integers(0, n["drg"], size),
        "_w": np.round(rng.uniform(0.3, 4.0, size), 3), "total_amount": amount,
        "fund_paid": fund, "self_paid": np.round(amount - fund, 2),
        "_reg": rng.integers(0, n["regions"], size), "cross_region": rng.random(size) < 0.05,
        "_h": hour}).select(
        _ids("C", pl.col("_i"), 10).alias("claim_id"),
        _ids("P", pl.col("_p"), 9).alias("patient_id"),
        _ids("D", pl.col("_d"), 7).alias("doctor_id"),
        _ids("F", pl.col("_f"), 6).alias("facility_id"),
        pl.when(pl.col("_ph")).then(_ids("R", pl.col("_r"), 6)).alias("pharmacy_id"),
        "setting",
        (pl.lit(START) + pl.duration(days=pl.col("_day"))).alias("service_date"),
        pl.when(pl.col("_inp")).then(pl.lit(START) + pl.duration(days=pl.col("_day")
                                                                 - pl.col("_los")))
        .alias("admit_date"),
        pl.when(pl.col("_inp")).then(pl.lit(START) + pl.duration(days=pl.col("_day")))
        .alias("discharge_date"),
        _ids("DX", pl.col("_dx"), 4).alias("diagnosis_code"),
        pl.when(pl.col("_inp")).then(_ids("DRG", pl.col("_drg"), 3)).alias("drg_group"),
        pl.when(pl.col("_inp")).then(pl.col("_w")).alias("drg_weight"),
        "total_amount", "fund_paid", "self_paid",
        _ids("REG", pl.col("_reg"), 2).alias("region"), "cross_region",
        (pl.lit(START).cast(pl.Datetime("us")) + pl.duration(days=pl.col("_day"),
                                                             hours=pl.col("_h")))
        .alias("settled_at"))
    # Lines: 1-3 per claim (mean 2); drug lines for pharmacy/outpatient/online claims.
    n_lines = rng.integers(1, 4, size)
    owner = np.repeat(np.arange(size), n_lines)
    line_no = np.arange(owner.size) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    is_drug = ~inpatient[owner] | (rng.random(owner.size) < 0.3)
    drug = rng.integers(0, n["drugs"], owner.size)
    qty = rng.integers(1, 60, owner.size).astype(float)
    price = np.where(is_drug, drug_price[drug], np.round(rng.lognormal(4, 1, owner.size), 2))
    item_type = np.where(is_drug, "drug", rng.choice(["exam", "treatment", "bed", "material"],
                                                     owner.size))
    lines = pl.DataFrame({
        "_i": idx[owner], "line_no": line_no.astype(np.int32), "item_type": item_type,
        "_drug": drug, "_is_drug": is_drug, "quantity": qty,
        "days_supply": np.where(is_drug, rng.integers(1, 31, owner.size), -1).astype(np.int32),
        "unit_price": price}).select(
        _ids("C", pl.col("_i"), 10).alias("claim_id"), "line_no", "item_type",
        pl.when(pl.col("_is_drug")).then(_ids("G", pl.col("_drug"), 5))
        .otherwise(pl.lit("T") + pl.col("_drug").cast(pl.String)).alias("item_code"),
        "quantity", pl.when(pl.col("days_supply") >= 0).then(pl.col("days_supply"))
        .alias("days_supply"), "unit_price",
        (pl.col("quantity") * pl.col("unit_price")).round(2).alias("amount"))
    rx = claims.filter(pl.col("pharmacy_id").is_not_null()).select(
        (pl.lit("X") + pl.col("claim_id").str.slice(1)).alias("rx_id"), "claim_id", "doctor_id",
        "patient_id", "pharmacy_id", pl.col("settled_at").alias("issued_at"),
        pl.col("settled_at").alias("filled_at"), pl.lit("flowed").alias("channel"))
    return {"claims": claims, "claim_lines": lines, "prescriptions": rx}


def synthesize(out: str | Path, n_claims: int, seed: int = 0) -> Path:
    """Write a dataset of ``n_claims`` claims to ``out`` (kept if it already exists)."""
    out = Path(out)
    if (out / "manifest.json").is_file():
        return out
    rng = np.random.default_rng(seed)
    n = sizes(n_claims)
    tables, doctor_facility, drug_price = _reference_tables(rng, n)
    with DatasetWriter(out, overwrite=True) as writer:
        for name, frame in tables.items():
            writer.write(name, frame)
        for offset in range(0, n_claims, SHARD):
            shard = _claim_shard(rng, n, offset, min(SHARD, n_claims - offset), doctor_facility,
                                 drug_price)
            for name, frame in shard.items():
                writer.write(name, frame)
        return writer.finish(seed=seed, config={"bench_claims": n_claims, **n},
                             generator_version="bench-synth")
