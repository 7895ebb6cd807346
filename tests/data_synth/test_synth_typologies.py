"""Each typology's signature is present in the rows labelled with it (tiny preset, seed 7)."""

from __future__ import annotations

import polars as pl
import pytest

import data_synth
from data_synth.world import build_world
from medfraud.schema import TYPOLOGIES
from tests.data_synth._signatures import (
    drug_lines, labelled, off_duty, off_label, over_dose, over_duration, pharmacy_balance, with_age,
)


def test_collusion_ring(tiny_dataset):
    claims = labelled(tiny_dataset, "collusion_ring")
    assert claims["ring_id"].null_count() == 0
    rings = claims.group_by("ring_id").agg(
        pl.col("doctor_id").n_unique().alias("doctors"), pl.col("patient_id").n_unique().alias("patients"),
        pl.col("pharmacy_id").drop_nulls().n_unique().alias("pharmacies"),
        pl.col("service_date").n_unique().alias("days"), pl.len().alias("claims"))
    assert rings.height >= 2
    assert (rings["doctors"] <= 3).all()                    # ring_doctors = 3 in tiny
    assert (rings["pharmacies"] == 1).all()                 # camouflage 0: one pharmacy per ring
    assert (rings["claims"] / rings["days"] >= 2).all()     # synchronized sessions
    # dense block: each ring patient saw ring doctors several times
    assert (rings["claims"] / rings["patients"] >= 2).all()
    ents = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "collusion_ring")
    assert set(ents["entity_type"]) == {"doctor", "patient", "pharmacy"}
    assert set(ents["ring_id"]) == set(rings["ring_id"])
    # drugs at the ring pharmacy are expensive compared with honest sales
    lines = tiny_dataset.read("claim_lines").filter(pl.col("item_type") == "drug")
    ring_price = lines.join(claims.select("claim_id"), on="claim_id")["unit_price"].median()
    assert ring_price > 5 * lines["unit_price"].median()


def test_phantom_patient(tiny_dataset):
    claims = with_age(labelled(tiny_dataset, "phantom_patient"), tiny_dataset)
    all_claims = tiny_dataset.read("claims")
    regions = all_claims.group_by("patient_id", "service_date").agg(
        pl.col("region").n_unique().alias("regions"))
    first = all_claims.group_by("patient_id").agg(pl.col("service_date").min().alias("first"))
    claims = claims.join(regions, on=["patient_id", "service_date"]).join(first, on="patient_id")
    after_death = pl.col("death_date").is_not_null() & (pl.col("service_date") > pl.col("death_date"))
    impossible = (pl.col("age") > 105) | (pl.col("birth_date") > pl.col("first"))
    borrowed = pl.col("regions") >= 2
    kinds = claims.select(after_death.sum().alias("dead"), impossible.sum().alias("unregistered"),
                          borrowed.sum().alias("borrowed")).row(0, named=True)
    assert claims.filter(~(after_death | impossible | borrowed)).height == 0
    assert min(kinds.values()) > 0, kinds
    ents = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "phantom_patient")
    assert set(claims["patient_id"]) == set(ents["entity_id"])


def test_over_prescription(tiny_dataset):
    claims = with_age(labelled(tiny_dataset, "over_prescription"), tiny_dataset)
    lines = drug_lines(tiny_dataset).join(claims.select("claim_id", "patient_id", "service_date", "sex", "age"),
                                          on="claim_id")
    flagged = lines.filter(over_dose() | over_duration() | off_label())["claim_id"].unique()
    # early refills: another sale of the same drug to the patient while the supply lasts
    refills = (lines.sort("patient_id", "item_code", "service_date")
               .with_columns((pl.col("service_date").shift(1) + pl.duration(days=pl.col("days_supply").shift(1)))
                             .over("patient_id", "item_code").alias("supply_end"))
               .filter(pl.col("service_date") < pl.col("supply_end")))
    early = set(refills["claim_id"])
    missing = set(claims["claim_id"]) - set(flagged) - early
    # the first sale of an early-refill pair is labelled too; it sits right before a flagged refill
    refill_patients = set(refills["patient_id"])
    leftover = claims.filter(pl.col("claim_id").is_in(list(missing)))
    assert leftover.filter(~pl.col("patient_id").is_in(list(refill_patients))).height == 0
    assert len(flagged) >= 10
    ents = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "over_prescription")
    assert (ents["entity_type"] == "doctor").all() and ents.height >= 1
    per_doc = claims.group_by("doctor_id").len()
    top = per_doc.sort("len", descending=True)["doctor_id"].head(ents.height)
    assert set(top) & set(ents["entity_id"])


def test_split_hospitalization(tiny_dataset):
    claims = labelled(tiny_dataset, "split_hospitalization")
    assert (claims["setting"] == "inpatient").all()
    stays = claims.select("claim_id", "patient_id", "diagnosis_code", "admit_date", "discharge_date")
    pairs = stays.join(stays, on=["patient_id", "diagnosis_code"], suffix="_next").filter(
        ((pl.col("admit_date_next") - pl.col("discharge_date")).dt.total_days()).is_between(1, 15))
    assert pairs.height >= 10
    assert set(pairs["claim_id"]) | set(pairs["claim_id_next"]) == set(claims["claim_id"])


def test_upcoding(tiny_dataset):
    config = data_synth.load_config("tiny", seed=7)
    world = build_world(config)
    base = pl.DataFrame({"diagnosis_code": world.diag_codes[world.inpatient_diags],
                         "base_group": world.drg_codes[world.diag_drg[world.inpatient_diags]],
                         "base_weight": world.drg_weight[world.diag_drg[world.inpatient_diags]]})
    claims = labelled(tiny_dataset, "upcoding").join(base, on="diagnosis_code")
    assert claims.height >= 10
    assert (claims["drg_weight"] > claims["base_weight"]).all()
    # blatant (camouflage 0): the group belongs to another ADRG than the diagnosis
    other_adrg = claims["drg_group"].str.slice(0, 4) != claims["base_group"].str.slice(0, 4)
    assert other_adrg.mean() > 0.8
    facilities = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "upcoding")
    assert set(claims["facility_id"]) == set(facilities["entity_id"])


def test_frequent_card_swiping(tiny_dataset):
    claims = labelled(tiny_dataset, "frequent_card_swiping")
    monthly = (claims.filter(pl.col("setting") == "pharmacy")
               .group_by("patient_id", "pharmacy_id", pl.col("service_date").dt.month()).len()
               .group_by("patient_id").agg(pl.col("len").max().alias("per_month")))
    daily = (claims.filter(pl.col("setting") == "outpatient")
             .group_by("patient_id", "service_date").agg(pl.col("facility_id").n_unique().alias("facilities"))
             .group_by("patient_id").agg(pl.col("facilities").max()))
    ents = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "frequent_card_swiping")
    both = ents.select(pl.col("entity_id").alias("patient_id")).join(monthly, on="patient_id", how="left") \
        .join(daily, on="patient_id", how="left")
    assert both.height >= 1
    assert ((both["per_month"].fill_null(0) > 4) | (both["facilities"].fill_null(0) >= 3)).all()
    assert (both["per_month"] > 4).all()


def test_ghost_bed(tiny_dataset):
    claims = labelled(tiny_dataset, "ghost_bed")
    stays = claims.filter(pl.col("setting") == "inpatient")
    lines = tiny_dataset.read("claim_lines").join(stays.select("claim_id"), on="claim_id")
    ratio = lines.group_by("claim_id").agg(
        ((pl.col("item_type") == "treatment").sum() / (pl.col("item_type") == "bed").sum()).alias("r"))
    all_claims = tiny_dataset.read("claims")
    during = (stays.select("claim_id", "patient_id", "facility_id", "admit_date", "discharge_date")
              .join(all_claims.select("patient_id", pl.col("claim_id").alias("other"),
                                      pl.col("facility_id").alias("other_fac"), "service_date"),
                    on="patient_id")
              .filter((pl.col("other") != pl.col("claim_id")) & (pl.col("other_fac") != pl.col("facility_id"))
                      & (pl.col("service_date") > pl.col("admit_date"))
                      & (pl.col("service_date") < pl.col("discharge_date"))))
    explained = set(ratio.filter(pl.col("r") < 0.6)["claim_id"]) | set(during["claim_id"]) | set(during["other"])
    assert set(claims["claim_id"]) <= explained
    assert ratio.filter(pl.col("r") < 0.6).height >= 5


def test_inventory_mismatch(tiny_dataset):
    balance = pharmacy_balance(tiny_dataset)
    ents = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "inventory_mismatch")
    assert ents.height >= 1
    excess = balance.filter(pl.col("sold") > pl.col("bought"))
    assert set(ents["entity_id"]) <= set(excess["pharmacy_id"])
    claims = labelled(tiny_dataset, "inventory_mismatch")
    assert set(claims["pharmacy_id"]) == set(ents["entity_id"])


def test_doctor_absent(tiny_dataset):
    claims = labelled(tiny_dataset, "doctor_absent")
    assert off_duty(claims, tiny_dataset).all()
    assert claims.height >= 10


def test_duplicate_billing(tiny_dataset):
    claims = labelled(tiny_dataset, "duplicate_billing")
    lines = tiny_dataset.read("claim_lines").join(claims.select("claim_id"), on="claim_id")
    dup = (lines.filter(pl.col("item_type").is_in(["exam", "drug"]))
           .group_by("claim_id", "item_code", "quantity", "unit_price").len().filter(pl.col("len") >= 2))
    assert set(dup["claim_id"]) == set(claims["claim_id"])


def test_one_signature_test_per_typology():
    names = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert set(TYPOLOGIES) <= names


@pytest.mark.parametrize("typology", TYPOLOGIES)
def test_prevalence_close_to_config(tiny_dataset, typology):
    config = data_synth.load_config("tiny", seed=7)
    labels = tiny_dataset.read("labels_claims")
    n_claims = tiny_dataset.read("claims").height
    honest = n_claims - labels["claim_id"].n_unique()
    observed = labels.filter(pl.col("typology") == typology).height / honest
    expected = config.typologies[typology].prevalence
    assert abs(observed - expected) <= 0.35 * expected, (observed, expected)
