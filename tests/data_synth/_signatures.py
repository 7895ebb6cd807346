"""Per-typology signature checks over a generated dataset (shared by the data_synth tests)."""

from __future__ import annotations

import polars as pl

from data_synth.world import DRUG_CATEGORIES
from medfraud.dataset import Dataset

CHRONIC_CATEGORIES = [c[0] for c in DRUG_CATEGORIES if c[1]]


def labelled(ds: Dataset, typology: str) -> pl.DataFrame:
    ids = ds.read("labels_claims").filter(pl.col("typology") == typology).select("claim_id", "ring_id")
    return ds.read("claims").join(ids, on="claim_id")


def honest_claims(ds: Dataset) -> pl.DataFrame:
    return ds.read("claims").join(ds.read("labels_claims").select("claim_id").unique(), on="claim_id",
                                  how="anti")


def drug_lines(ds: Dataset) -> pl.DataFrame:
    drugs = ds.read("drugs").select(pl.col("drug_code").alias("item_code"), "max_daily_units", "category",
                                    "sex_restriction", "min_age", "max_age")
    return ds.read("claim_lines").filter(pl.col("item_type") == "drug").join(drugs, on="item_code")


def with_age(claims: pl.DataFrame, ds: Dataset) -> pl.DataFrame:
    patients = ds.read("patients").select("patient_id", "sex", "birth_date", "death_date")
    return claims.join(patients, on="patient_id").with_columns(
        ((pl.col("service_date") - pl.col("birth_date")).dt.total_days() / 365.25).floor()
        .cast(pl.Int32).alias("age"))


def off_label() -> pl.Expr:
    """Drug line restricted against the patient's sex or age (needs sex, age and drug columns)."""
    return (((pl.col("sex_restriction").is_not_null()) & (pl.col("sex_restriction") != pl.col("sex")))
            | (pl.col("min_age").is_not_null() & (pl.col("age") < pl.col("min_age")))
            | (pl.col("max_age").is_not_null() & (pl.col("age") > pl.col("max_age"))))


def over_dose() -> pl.Expr:
    return pl.col("quantity") > pl.col("max_daily_units") * pl.col("days_supply") + 1e-9


def over_duration() -> pl.Expr:
    limit = pl.when(pl.col("category").is_in(CHRONIC_CATEGORIES)).then(84).otherwise(7)
    return pl.col("days_supply") > limit


def off_duty(claims: pl.DataFrame, ds: Dataset) -> pl.Series:
    """True where the claim's doctor is not on the roster that day at that facility."""
    roster = ds.read("duty_roster").select("doctor_id", pl.col("date").alias("service_date"),
                                           pl.col("facility_id").alias("roster_facility"))
    joined = claims.join(roster, on=["doctor_id", "service_date"], how="left", maintain_order="left")
    return (joined["roster_facility"].is_null()
            | (joined["roster_facility"] != joined["facility_id"]))


def pharmacy_balance(ds: Dataset) -> pl.DataFrame:
    """Per (pharmacy, drug): total sold and total purchased (opening stock included)."""
    sales = (ds.read("claims").filter(pl.col("pharmacy_id").is_not_null())
             .select("claim_id", "pharmacy_id", "service_date")
             .join(ds.read("claim_lines").filter(pl.col("item_type") == "drug"), on="claim_id")
             .group_by("pharmacy_id", pl.col("item_code").alias("drug_code"))
             .agg(pl.col("quantity").sum().alias("sold")))
    bought = ds.read("pharmacy_purchases").group_by("pharmacy_id", "drug_code").agg(
        pl.col("quantity").sum().alias("bought"))
    return sales.join(bought, on=["pharmacy_id", "drug_code"], how="left").with_columns(
        pl.col("bought").fill_null(0.0))
