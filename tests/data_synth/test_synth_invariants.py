"""The tiny dataset passes the contract and honest rows keep the generator's invariants."""

from __future__ import annotations

import polars as pl

from medfraud.schema import TYPOLOGIES, validate
from tests.data_synth._signatures import (
    drug_lines, honest_claims, off_duty, off_label, over_dose, over_duration, with_age,
)


def test_tiny_passes_contract(tiny_dataset_path):
    report = validate(tiny_dataset_path)
    assert report.ok, "\n".join(map(str, report.problems))
    assert 2_000 <= report.row_counts["claims"] <= 20_000
    for table in ("claim_lines", "prescriptions", "pharmacy_purchases", "duty_roster", "labels_claims",
                  "labels_entities", "audited"):
        assert report.row_counts[table] > 0, table


def test_every_typology_labelled(tiny_dataset):
    counts = dict(tiny_dataset.read("labels_claims").group_by("typology").len().iter_rows())
    assert set(counts) == set(TYPOLOGIES)
    assert min(counts.values()) >= 10, counts


def test_amounts_add_up(tiny_dataset):
    claims = tiny_dataset.read("claims")
    sums = tiny_dataset.read("claim_lines").group_by("claim_id").agg(pl.col("amount").sum().alias("lines"))
    joined = claims.join(sums, on="claim_id", how="left")
    assert joined["lines"].null_count() == 0, "claim without lines"
    assert (joined["total_amount"] - joined["lines"]).abs().max() < 1e-6
    assert (claims["fund_paid"] + claims["self_paid"] - claims["total_amount"]).abs().max() <= 0.01 + 1e-9
    lines = tiny_dataset.read("claim_lines")
    assert ((lines["quantity"] * lines["unit_price"]).round(2) - lines["amount"]).abs().max() < 1e-9


def test_honest_claims_never_after_death(tiny_dataset):
    claims = with_age(honest_claims(tiny_dataset), tiny_dataset)
    after = claims.filter(pl.col("death_date").is_not_null() & (pl.col("service_date") >= pl.col("death_date")))
    assert after.height == 0, after.head(3)
    assert claims.filter(pl.col("service_date") < pl.col("birth_date")).height == 0


def test_honest_doctors_on_duty(tiny_dataset):
    claims = honest_claims(tiny_dataset)
    assert off_duty(claims, tiny_dataset).sum() == 0


def test_honest_drug_lines_within_label(tiny_dataset):
    claims = with_age(honest_claims(tiny_dataset), tiny_dataset).select("claim_id", "sex", "age")
    lines = drug_lines(tiny_dataset).join(claims, on="claim_id")
    assert lines.height > 1_000
    assert lines.filter(over_dose()).height == 0
    assert lines.filter(over_duration()).height == 0
    assert lines.filter(off_label()).height == 0
    assert lines["days_supply"].max() <= 84


def test_honest_chronic_refills_do_not_overlap(tiny_dataset):
    claims = honest_claims(tiny_dataset).select("claim_id", "patient_id", "service_date")
    lines = drug_lines(tiny_dataset).filter(pl.col("days_supply") > 7).join(claims, on="claim_id")
    ordered = lines.sort("patient_id", "item_code", "service_date").with_columns(
        (pl.col("service_date").shift(1) + pl.duration(days=pl.col("days_supply").shift(1)))
        .over("patient_id", "item_code").alias("supply_end"))
    assert ordered.height > 50
    assert ordered.filter(pl.col("service_date") < pl.col("supply_end")).height == 0


def test_honest_pharmacies_never_sell_more_than_bought(tiny_dataset):
    mismatch = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "inventory_mismatch")
    sales = (tiny_dataset.read("claims").filter(pl.col("pharmacy_id").is_not_null())
             .select("claim_id", "pharmacy_id", pl.col("service_date").alias("date"))
             .join(tiny_dataset.read("claim_lines").filter(pl.col("item_type") == "drug"), on="claim_id")
             .select("pharmacy_id", pl.col("item_code").alias("drug_code"), "date",
                     (-pl.col("quantity")).alias("delta"), pl.lit(1).alias("order")))
    buys = tiny_dataset.read("pharmacy_purchases").select(
        "pharmacy_id", "drug_code", pl.col("purchase_date").alias("date"), pl.col("quantity").alias("delta"),
        pl.lit(0).alias("order"))
    stock = (pl.concat([sales, buys]).join(mismatch.select(pl.col("entity_id").alias("pharmacy_id")),
                                           on="pharmacy_id", how="anti")
             .sort("pharmacy_id", "drug_code", "date", "order")
             .with_columns(pl.col("delta").cum_sum().over("pharmacy_id", "drug_code").alias("stock")))
    assert sales.height > 500
    assert stock["stock"].min() >= -1e-9
    opening = tiny_dataset.read("pharmacy_purchases").filter(pl.col("supplier_id") == "OPENING")
    assert opening.height > 0 and opening["purchase_date"].n_unique() == 1


def test_prescriptions_link_pharmacy_claims(tiny_dataset):
    rx = tiny_dataset.read("prescriptions")
    claims = tiny_dataset.read("claims").select("claim_id", "setting", "pharmacy_id", "patient_id")
    joined = rx.join(claims, on="claim_id")
    assert joined.height == rx.height
    assert (joined["setting"] == "pharmacy").all()
    assert (joined["pharmacy_id"] == joined["pharmacy_id_right"]).all()
    assert set(rx["channel"].unique()) >= {"flowed", "online"}


def test_inpatient_lines_and_drg(tiny_dataset):
    stays = tiny_dataset.read("claims").filter(pl.col("setting") == "inpatient")
    honest = honest_claims(tiny_dataset).filter(pl.col("setting") == "inpatient")
    assert honest.height > 30 and honest["drg_group"].null_count() == 0
    lines = tiny_dataset.read("claim_lines").join(honest.select("claim_id", "admit_date", "discharge_date"),
                                                  on="claim_id")
    per = lines.group_by("claim_id", "admit_date", "discharge_date").agg(
        (pl.col("item_type") == "bed").sum().alias("beds"),
        (pl.col("item_type") == "treatment").sum().alias("treatments"))
    nights = (per["discharge_date"] - per["admit_date"]).dt.total_days()
    assert (per["beds"] == nights).all()
    assert (per["treatments"] / per["beds"]).mean() > 0.7
    # Each diagnosis maps to one ADRG: at most two groups (with / without complication).
    groups = honest.group_by("diagnosis_code").agg(pl.col("drg_group").n_unique())
    assert groups["drg_group"].max() <= 2
    assert stays.filter(pl.col("drg_group").is_null()).height == 0


def test_world_shape(tiny_dataset):
    patients = tiny_dataset.read("patients")
    assert set(patients["insurance_type"].unique()) == {"employee", "resident"}
    assert 0.02 < patients["chronic"].mean() < 0.4
    assert patients["death_date"].null_count() < patients.height
    drugs = tiny_dataset.read("drugs")
    assert drugs["unit_price"].max() / drugs["unit_price"].min() > 100
    assert drugs["sex_restriction"].null_count() < drugs.height
    assert drugs["reimbursable"].sum() < drugs.height
    assert set(tiny_dataset.read("facilities")["level"].unique()) <= {1, 2, 3}
    assert tiny_dataset.read("pharmacies")["chain_id"].null_count() < tiny_dataset.read("pharmacies").height
    settings = set(tiny_dataset.read("claims")["setting"].unique())
    assert settings == {"outpatient", "inpatient", "pharmacy", "online"}
    assert tiny_dataset.read("claims")["cross_region"].sum() > 0


def test_audit_sample_is_partial_and_biased(tiny_dataset):
    audited = tiny_dataset.read("audited")
    claims = tiny_dataset.read("claims")
    aud_claims = audited.filter(pl.col("entity_type") == "claim")
    assert 0.01 < aud_claims.height / claims.height < 0.2
    assert aud_claims["is_fraud"].any() and (~aud_claims["is_fraud"]).any()
    assert (aud_claims["typology"].is_null() == ~aud_claims["is_fraud"]).all()
    fraud_share_audited = aud_claims["is_fraud"].mean()
    fraud_share = tiny_dataset.read("labels_claims")["claim_id"].n_unique() / claims.height
    assert fraud_share_audited > fraud_share          # audits favour (blatant) fraud
    audited_spend = claims.join(aud_claims.select(pl.col("entity_id").alias("claim_id")), on="claim_id")
    assert audited_spend["total_amount"].mean() > claims["total_amount"].mean()
    assert set(audited["entity_type"].unique()) >= {"claim", "patient", "doctor"}
