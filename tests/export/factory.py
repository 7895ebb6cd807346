"""A small hand-built contract dataset with injected, labelled fraud (independent of data_synth).

Three typologies a rule and a model can both see: over-prescription (quantity far above the
drug's daily maximum times the days of supply), duplicate billing (a drug line billed twice)
and doctor_absent (the signing doctor is off the roster that day).  Everything is drawn from
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from medfraud.dataset import write_dataset

START = date(2024, 1, 1)
DAYS = 182


def _days_after(start: date, days: np.ndarray) -> pl.Series:
    return pl.select(pl.lit(start) + pl.duration(days=pl.lit(pl.Series(days)))).to_series()


def make_tables(n_claims: int = 2400, seed: int = 11) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n_pat, n_doc = max(400, n_claims // 6), max(24, n_claims // 100)
    n_fac, n_pha, n_drug = 4, 5, 30
    regions = np.array(["R01", "R02"])
    patients = pl.DataFrame({
        "patient_id": [f"P{i:05d}" for i in range(n_pat)],
        "sex": rng.choice(["M", "F"], n_pat),
        "birth_date": _days_after(date(1940, 1, 1), rng.integers(0, 25000, n_pat)),
        "death_date": [None] * n_pat,
        "region": rng.choice(regions, n_pat),
        "insurance_type": rng.choice(["employee", "resident"], n_pat),
        "chronic": rng.random(n_pat) < 0.2,
    }, schema_overrides={"death_date": pl.Date})
    facilities = pl.DataFrame({"facility_id": [f"F{i:03d}" for i in range(n_fac)],
                               "level": pl.Series([1, 2, 3, 2], dtype=pl.Int8),
                               "ownership": ["public", "public", "public", "private"],
                               "region": ["R01", "R01", "R02", "R02"]})
    doc_fac = np.arange(n_doc) % n_fac
    doctors = pl.DataFrame({"doctor_id": [f"D{i:04d}" for i in range(n_doc)],
                            "facility_id": [f"F{i:03d}" for i in doc_fac],
                            "department": rng.choice(["internal", "surgery", "pediatrics"], n_doc),
                            "title": rng.choice(["resident", "attending", "chief"], n_doc),
                            "credit_points": pl.Series([12] * n_doc, dtype=pl.Int32)})
    pharmacies = pl.DataFrame({"pharmacy_id": [f"R{i:03d}" for i in range(n_pha)],
                               "region": rng.choice(regions, n_pha), "chain_id": [None] * n_pha},
                              schema_overrides={"chain_id": pl.String})
    unit_price = np.round(rng.lognormal(2.5, 1.0, n_drug), 2)
    drugs = pl.DataFrame({
        "drug_code": [f"X{i:03d}" for i in range(n_drug)], "name": [f"drug{i}" for i in range(n_drug)],
        "category": rng.choice(["a", "b", "c"], n_drug), "unit_price": unit_price,
        "max_daily_units": rng.integers(1, 4, n_drug).astype(float),
        "reimbursable": np.ones(n_drug, dtype=bool), "sex_restriction": [None] * n_drug,
        "min_age": [None] * n_drug, "max_age": [None] * n_drug, "restricted_level": [None] * n_drug,
    }, schema_overrides={"sex_restriction": pl.String, "min_age": pl.Int32, "max_age": pl.Int32,
                         "restricted_level": pl.Int8})

    # Claims: outpatient (with pharmacy sale) and a few inpatient stays.
    n = n_claims
    day = np.sort(rng.integers(0, DAYS, n))
    service = _days_after(START, day)
    pat = rng.integers(0, n_pat, n)
    doc = rng.integers(0, n_doc, n)
    inpatient = rng.random(n) < 0.05
    setting = np.where(inpatient, "inpatient", np.where(rng.random(n) < 0.3, "pharmacy", "outpatient"))
    pharmacy = np.where(setting == "pharmacy", rng.integers(0, n_pha, n).astype(str), "")
    typology = np.full(n, "", dtype=object)
    u = rng.random(n)
    typology[(u < 0.05) & ~inpatient] = "over_prescription"
    typology[(u >= 0.05) & (u < 0.08) & ~inpatient] = "duplicate_billing"
    typology[(u >= 0.08) & (u < 0.11)] = "doctor_absent"
    claim_ids = [f"C{i:06d}" for i in range(n)]

    # Lines: 1-3 drug lines per claim, one bed line for inpatient stays.
    n_lines = rng.integers(1, 4, n)
    line_claim = np.repeat(np.arange(n), n_lines)
    line_no = np.arange(line_claim.size) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    drug = rng.integers(0, n_drug, line_claim.size)
    days_supply = rng.integers(1, 8, line_claim.size)
    max_daily = drugs["max_daily_units"].to_numpy()[drug]
    quantity = np.maximum(1, np.floor(max_daily * days_supply * rng.uniform(0.3, 0.9, line_claim.size)))
    over = typology[line_claim] == "over_prescription"
    quantity = np.where(over & (line_no == 1), max_daily * days_supply * rng.uniform(4, 8, line_claim.size),
                        quantity).round(0)
    lines = pl.DataFrame({"claim_id": np.asarray(claim_ids)[line_claim], "line_no": line_no.astype(np.int32),
                          "item_type": "drug", "item_code": np.asarray(drugs["drug_code"])[drug],
                          "quantity": quantity, "days_supply": days_supply.astype(np.int32),
                          "unit_price": unit_price[drug]})
    dup_claims = np.flatnonzero(typology == "duplicate_billing")
    dups = (lines.filter(pl.col("claim_id").is_in(np.asarray(claim_ids)[dup_claims].tolist())
                         & (pl.col("line_no") == 1))
            .with_columns((pl.col("line_no") + 10).cast(pl.Int32)))
    beds = pl.DataFrame({"claim_id": np.asarray(claim_ids)[inpatient], "line_no": np.int32(20),
                         "item_type": "bed", "item_code": "BED", "quantity": 4.0,
                         "days_supply": None, "unit_price": 300.0},
                        schema_overrides={"days_supply": pl.Int32, "line_no": pl.Int32})
    lines = pl.concat([lines, dups, beds], how="diagonal_relaxed").with_columns(
        (pl.col("quantity") * pl.col("unit_price")).round(2).alias("amount")).sort("claim_id", "line_no")
    totals = lines.group_by("claim_id").agg(pl.col("amount").sum().round(2).alias("total_amount"))

    admit = pl.select(pl.when(pl.lit(pl.Series(inpatient))).then(pl.lit(service))).to_series()
    discharge = pl.select(pl.when(pl.lit(pl.Series(inpatient)))
                          .then(pl.lit(service) + pl.duration(days=4))).to_series()
    claims = pl.DataFrame({
        "claim_id": claim_ids, "patient_id": np.asarray(patients["patient_id"])[pat],
        "doctor_id": np.asarray(doctors["doctor_id"])[doc],
        "facility_id": np.asarray(doctors["facility_id"])[doc],
        "pharmacy_id": pl.Series(np.char.add("R", np.char.zfill(pharmacy, 3))).set(
            pl.Series(pharmacy == ""), None),
        "setting": setting,
        "service_date": service, "admit_date": admit, "discharge_date": discharge,
        "diagnosis_code": rng.choice(["E11", "I10", "J06", "K35"], n),
        "drg_group": pl.Series(np.full(n, "GB1")).set(pl.Series(~inpatient), None),
        "drg_weight": np.where(inpatient, 1.2, np.nan),
        "region": np.asarray(patients["region"])[pat], "cross_region": np.zeros(n, dtype=bool),
        "settled_at": pl.select(pl.lit(service).cast(pl.Datetime("us"))
                                + pl.duration(hours=pl.lit(pl.Series(rng.integers(8, 18, n))))).to_series(),
    }, schema_overrides={"admit_date": pl.Date, "discharge_date": pl.Date, "drg_weight": pl.Float64,
                         "pharmacy_id": pl.String, "drg_group": pl.String})
    claims = claims.with_columns(pl.col("drg_weight").fill_nan(None)).join(totals, on="claim_id").with_columns(
        (pl.col("total_amount") * 0.7).round(2).alias("fund_paid")).with_columns(
        (pl.col("total_amount") - pl.col("fund_paid")).round(2).alias("self_paid"))

    # Roster: every doctor every day at their facility, except the absent-doctor claims' days.
    roster = pl.DataFrame({"doctor_id": np.repeat(doctors["doctor_id"].to_numpy(), DAYS + 30),
                           "facility_id": np.repeat(doctors["facility_id"].to_numpy(), DAYS + 30),
                           "date": _days_after(START, np.tile(np.arange(DAYS + 30), n_doc))})
    absent = claims.filter(pl.Series(typology == "doctor_absent")).select(
        "doctor_id", pl.col("service_date").alias("date"))
    roster = roster.join(absent, on=["doctor_id", "date"], how="anti")
    # Claims of other typologies that fall on an absent day are not labelled absent: keep labels truthful.
    labels_claims = pl.DataFrame({"claim_id": claim_ids, "typology": typology.astype(str)}).filter(
        pl.col("typology") != "").with_columns(pl.lit(None, pl.String).alias("ring_id"))
    purchases = pl.DataFrame({"pharmacy_id": np.repeat(pharmacies["pharmacy_id"].to_numpy(), n_drug),
                              "drug_code": np.tile(drugs["drug_code"].to_numpy(), n_pha),
                              "purchase_date": START, "quantity": 10000.0, "supplier_id": "OPENING"})
    rx_claims = claims.filter(pl.col("pharmacy_id").is_not_null())
    prescriptions = rx_claims.select(
        pl.format("RX{}", pl.col("claim_id")).alias("rx_id"), "claim_id", "doctor_id", "patient_id",
        "pharmacy_id", pl.col("settled_at").alias("issued_at"),
        (pl.col("settled_at") + pl.duration(hours=1)).alias("filled_at"),
        pl.lit("flowed").alias("channel"))
    audited_ids = rng.choice(n, n // 5, replace=False)
    audited = pl.DataFrame({"entity_type": "claim", "entity_id": np.asarray(claim_ids)[audited_ids],
                            "audited_on": date(2024, 8, 1),
                            "is_fraud": typology[audited_ids] != "",
                            "typology": [t or None for t in typology[audited_ids]]},
                           schema_overrides={"typology": pl.String})
    labels_entities = pl.DataFrame(schema={"entity_type": pl.String, "entity_id": pl.String,
                                           "typology": pl.String, "ring_id": pl.String})
    return {"patients": patients, "facilities": facilities, "doctors": doctors,
            "pharmacies": pharmacies, "drugs": drugs, "claims": claims, "claim_lines": lines,
            "prescriptions": prescriptions, "pharmacy_purchases": purchases, "duty_roster": roster,
            "labels_claims": labels_claims, "labels_entities": labels_entities, "audited": audited}


def make_dataset(out: Path, n_claims: int = 2400, seed: int = 11) -> Path:
    """Write :func:`make_tables` as a dataset folder and return its path."""
    return write_dataset(out, make_tables(n_claims, seed), seed=seed,
                         config={"factory": "tests.export.factory", "n_claims": n_claims})


EXPERIMENT_YAML = """\
name: export_fixture
seed: 3
dataset:
  path: {dataset}
features:
  levels: [claim, doctor]
split:
  kind: temporal
  params: {{train_fraction: 0.67}}
detectors:
  lightgbm: {{family: lightgbm, level: claim, params: {{n_estimators: 60, early_stopping_rounds: 20}}}}
  rules: {{family: rules, level: claim}}
  iforest_doctor: {{family: pyod, level: doctor, params: {{model: IForest, params: {{n_estimators: 50}}}}}}
tracking:
  uri: {uri}
  plots: false
"""


def build_exported_model(base: Path, name: str = "fixture_model"):
    """Dataset -> tracked experiment run -> exported, registered model, built once under ``base``.

    Returns
    -------
    dict with dataset (Path), uri (tracking URI), run_id, model_dir (Path), name, version.
    """
    import json

    marker = base / "bundle.json"
    if marker.is_file():
        bundle = json.loads(marker.read_text())
        return {**bundle, "dataset": Path(bundle["dataset"]), "model_dir": Path(bundle["model_dir"])}
    from medfraud.config import load_experiment
    from medfraud.experiment import run_experiment
    from medfraud.export.from_run import export_run

    base.mkdir(parents=True, exist_ok=True)
    dataset = make_dataset(base / "dataset")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    experiment = base / "experiment.yaml"
    experiment.write_text(EXPERIMENT_YAML.format(dataset=dataset, uri=uri))
    configs = Path(__file__).resolve().parents[2] / "configs"
    result = run_experiment(load_experiment(experiment, configs_dir=configs))
    exported = export_run(name=name, run_id=result.parent_run_id, out=base / "models" / name, uri=uri)
    # Scores of the in-process pipeline (before saving) on the held-out claims: the parity reference.
    claims, lines = holdout_frames(dataset)
    exported.pipeline.score(claims, lines).write_parquet(base / "in_process_scores.parquet")
    bundle = {"dataset": str(dataset), "uri": uri, "run_id": result.parent_run_id,
              "in_process_scores": str(base / "in_process_scores.parquet"),
              "model_dir": str(exported.model_dir), "name": name, "version": exported.version}
    marker.write_text(json.dumps(bundle))
    return {**bundle, "dataset": dataset, "model_dir": exported.model_dir}


def holdout_frames(dataset: Path, start: date = date(2024, 5, 1)) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Claims from ``start`` on (the fixture run's test months) and their lines."""
    from medfraud.dataset import Dataset

    ds = Dataset(dataset)
    claims = ds.scan("claims").filter(pl.col("service_date") >= start).collect()
    lines = ds.scan("claim_lines").join(claims.lazy().select("claim_id"), on="claim_id",
                                        how="semi").collect()
    return claims, lines
