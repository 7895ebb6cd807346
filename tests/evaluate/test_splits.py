"""Leak-free splits on a small hand-built dataset."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from medfraud.dataset import Dataset, write_dataset
from medfraud.evaluate.splits import (
    Split,
    entity_grouped_split,
    temporal_grouped_split,
    temporal_split,
)

N_FAC, N_DOC, N_PAT, N_PHA, N_CLAIMS = 8, 24, 60, 5, 1200
FIRST = date(2024, 1, 1)


def _tables(seed: int = 0) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    facilities = pl.DataFrame({"facility_id": [f"F{i}" for i in range(N_FAC)],
                               "level": [1 + i % 3 for i in range(N_FAC)],
                               "ownership": ["public"] * N_FAC, "region": ["A"] * N_FAC})
    doctors = pl.DataFrame({"doctor_id": [f"D{i:02d}" for i in range(N_DOC)],
                            "facility_id": [f"F{i % N_FAC}" for i in range(N_DOC)],
                            "department": ["internal"] * N_DOC, "title": ["x"] * N_DOC,
                            "credit_points": [12] * N_DOC})
    patients = pl.DataFrame({"patient_id": [f"P{i:03d}" for i in range(N_PAT)],
                             "sex": ["F"] * N_PAT, "birth_date": [date(1970, 1, 1)] * N_PAT,
                             "death_date": [None] * N_PAT, "region": ["A"] * N_PAT,
                             "insurance_type": ["employee"] * N_PAT, "chronic": [False] * N_PAT},
                            schema_overrides={"death_date": pl.Date})
    pharmacies = pl.DataFrame({"pharmacy_id": [f"R{i}" for i in range(N_PHA)],
                               "region": ["A"] * N_PHA,
                               "chain_id": ["K1", "K1", None, None, None]})
    doc = rng.integers(0, N_DOC, N_CLAIMS)
    pha = rng.integers(0, N_PHA, N_CLAIMS)
    days = rng.integers(0, 182, N_CLAIMS)  # January to June 2024
    service = [FIRST + timedelta(days=int(d)) for d in days]
    is_pharmacy = rng.random(N_CLAIMS) < 0.4
    claims = pl.DataFrame({
        "claim_id": [f"C{i:05d}" for i in range(N_CLAIMS)],
        "patient_id": [f"P{i:03d}" for i in rng.integers(0, N_PAT, N_CLAIMS)],
        "doctor_id": [f"D{i:02d}" for i in doc],
        "facility_id": [f"F{i % N_FAC}" for i in doc],
        "pharmacy_id": [f"R{p}" if ph else None for p, ph in zip(pha, is_pharmacy)],
        "setting": ["pharmacy" if ph else "outpatient" for ph in is_pharmacy],
        "service_date": service, "admit_date": None, "discharge_date": None,
        "diagnosis_code": "I10", "drg_group": None, "drg_weight": None,
        "total_amount": 100.0, "fund_paid": 70.0, "self_paid": 30.0, "region": "A",
        "cross_region": False,
        "settled_at": [datetime(d.year, d.month, d.day, 10) for d in service],
    }, schema_overrides={"admit_date": pl.Date, "discharge_date": pl.Date, "drg_group": pl.String,
                         "drg_weight": pl.Float64})
    empty = {
        "drugs": pl.DataFrame({"drug_code": ["G1"], "name": ["g"], "category": ["x"],
                               "unit_price": [1.0], "max_daily_units": [1.0],
                               "reimbursable": [True], "sex_restriction": [None], "min_age": [None],
                               "max_age": [None], "restricted_level": [None]},
                              schema_overrides={"sex_restriction": pl.String, "min_age": pl.Int32,
                                                "max_age": pl.Int32, "restricted_level": pl.Int8}),
        "claim_lines": pl.DataFrame({"claim_id": ["C00000"], "line_no": [1], "item_type": ["drug"],
                                     "item_code": ["G1"], "quantity": [1.0], "days_supply": [1],
                                     "unit_price": [1.0], "amount": [1.0]}),
        "prescriptions": pl.DataFrame({"rx_id": ["X"], "claim_id": ["C00000"],
                                       "doctor_id": ["D00"], "patient_id": ["P000"],
                                       "pharmacy_id": ["R0"], "issued_at": [datetime(2024, 1, 1)],
                                       "filled_at": [None], "channel": ["flowed"]},
                                      schema_overrides={"filled_at": pl.Datetime("us")}),
        "pharmacy_purchases": pl.DataFrame({"pharmacy_id": ["R0"], "drug_code": ["G1"],
                                            "purchase_date": [FIRST], "quantity": [1.0],
                                            "supplier_id": ["OPENING"]}),
        "duty_roster": pl.DataFrame({"doctor_id": ["D00"], "facility_id": ["F0"], "date": [FIRST]}),
    }
    return {"patients": patients, "facilities": facilities, "doctors": doctors,
            "pharmacies": pharmacies, "claims": claims, **empty}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return Dataset(write_dataset(tmp_path_factory.mktemp("split") / "ds", _tables()))


@pytest.fixture(scope="module")
def claims(dataset) -> pl.DataFrame:
    return dataset.read("claims")


# A ring of two doctors at different facilities, three patients and one pharmacy.
RING = pl.DataFrame({"entity_id": ["D00", "D01", "P001", "P002", "P003", "R2"],
                     "group_id": ["ring1"] * 6})


def _entity_ids(dataset) -> dict[str, set[str]]:
    return {"patient": set(dataset.read("patients")["patient_id"]),
            "doctor": set(dataset.read("doctors")["doctor_id"]),
            "pharmacy": set(dataset.read("pharmacies")["pharmacy_id"]),
            "facility": set(dataset.read("facilities")["facility_id"])}


def test_temporal_split_windows(dataset, claims):
    split = temporal_split(dataset)
    assert split.train_window == (date(2024, 1, 1), date(2024, 4, 30))  # round(6 * 0.67) = 4
    assert split.test_window == (date(2024, 5, 1), claims["service_date"].max())
    short = temporal_split(dataset, train_months=2, test_months=1)
    assert short.train_window == (date(2024, 1, 1), date(2024, 2, 29))
    assert short.test_window == (date(2024, 3, 1), date(2024, 3, 31))
    train = split.mask("claim", claims, "train")
    test = split.mask("claim", claims, "test")
    assert not (train & test).any() and (train | test).all()
    assert claims.filter(test)["service_date"].min() > claims.filter(train)["service_date"].max()


@pytest.mark.parametrize("kwargs", [{"train_months": 6}, {"train_months": 4, "test_months": 3},
                                    {"train_fraction": 1.5}])
def test_temporal_split_rejects_impossible_windows(dataset, kwargs):
    with pytest.raises(ValueError):
        temporal_split(dataset, **kwargs)


@pytest.mark.parametrize("level", ["doctor", "facility", "pharmacy"])
def test_grouped_split_partitions_every_level(dataset, claims, level):
    split = entity_grouped_split(dataset, level, test_fraction=0.3, seed=1)
    for lvl, ids in _entity_ids(dataset).items():
        assert not split.train_ids[lvl] & split.test_ids[lvl], f"{lvl} on both sides"
        assert split.train_ids[lvl] | split.test_ids[lvl] == ids, f"{lvl} not all assigned"
    train = split.mask("claim", claims, "train")
    test = split.mask("claim", claims, "test")
    assert not (train & test).any() and (train | test).all()
    # No grouping entity has claims on both sides.
    col = {"doctor": "doctor_id", "facility": "facility_id", "pharmacy": "pharmacy_id"}[level]
    crossing = (claims.with_columns(test.alias("t")).filter(pl.col(col).is_not_null())
                .group_by(col).agg(pl.col("t").n_unique().alias("sides"))
                .filter(pl.col("sides") > 1))
    assert crossing.height == 0


def test_doctor_split_keeps_facilities_together_and_hits_fraction(dataset, claims):
    split = entity_grouped_split(dataset, "doctor", test_fraction=0.3, seed=3)
    doctors = dataset.read("doctors").with_columns(
        split.assign("doctor", dataset.read("doctors")["doctor_id"]))
    per_facility = doctors.group_by("facility_id").agg(pl.col("side").n_unique())
    assert (per_facility["side"] == 1).all()
    share = split.mask("claim", claims, "test").mean()
    assert 0.15 < share < 0.45  # 8 facilities of ~1/8 of the claims each


@pytest.mark.parametrize("seed", range(6))
def test_ring_members_stay_on_one_side(dataset, seed):
    split = entity_grouped_split(dataset, "doctor", test_fraction=0.3, seed=seed, groups=RING)
    sides = set()
    for entity_id in RING["entity_id"]:
        level = {"D": "doctor", "P": "patient", "R": "pharmacy"}[entity_id[0]]
        sides |= {side for side, ids in (("train", split.train_ids), ("test", split.test_ids))
                  if entity_id in ids[level]}
    assert len(sides) == 1
    # the ring joins facilities F0 and F1: all their doctors are together as well
    doctors = dataset.read("doctors").filter(pl.col("facility_id").is_in(["F0", "F1"]))
    assert split.assign("doctor", doctors["doctor_id"]).n_unique() == 1


def test_pharmacy_chain_stays_together(dataset):
    for seed in range(5):
        split = entity_grouped_split(dataset, "pharmacy", seed=seed)
        assert split.assign("pharmacy", pl.Series(["R0", "R1"])).n_unique() == 1


def test_seeded_and_deterministic(dataset):
    a = entity_grouped_split(dataset, "doctor", seed=5)
    b = entity_grouped_split(dataset, "doctor", seed=5)
    assert a == b
    others = [entity_grouped_split(dataset, "doctor", seed=s).test_ids["doctor"]
              for s in range(6, 12)]
    assert any(ids != a.test_ids["doctor"] for ids in others)


def test_temporal_grouped_split(dataset, claims):
    split = temporal_grouped_split(dataset, "doctor", seed=2, train_months=3, test_months=3)
    test = claims.filter(split.mask("claim", claims, "test"))
    train = claims.filter(split.mask("claim", claims, "train"))
    assert test["service_date"].min() >= date(2024, 4, 1)
    assert train["service_date"].max() <= date(2024, 3, 31)
    assert set(test["doctor_id"]) <= split.test_ids["doctor"]
    assert set(train["doctor_id"]) <= split.train_ids["doctor"]
    assert not set(test["doctor_id"]) & set(train["doctor_id"])


def test_mask_on_entity_frames_and_unknown_ids(dataset):
    split = entity_grouped_split(dataset, "facility", seed=0)
    frame = pl.DataFrame({"facility_id": ["F0", "F1", "F9"]})
    train, test = split.mask("facility", frame, "train"), split.mask("facility", frame, "test")
    assert not train[2] and not test[2]  # unknown facility on neither side
    assert (train | test)[:2].all()
    assert split.assign("facility", frame["facility_id"])[2] is None
    temporal = temporal_split(dataset)
    assert temporal.mask("doctor", pl.DataFrame({"doctor_id": ["D00"]}), "test").all()
    with pytest.raises(ValueError, match="not grouped"):
        temporal.assign("doctor", pl.Series(["D00"]))
    with pytest.raises(ValueError, match="side must be"):
        split.mask("facility", frame, "validation")
    with pytest.raises(KeyError, match="lacks column"):
        split.mask("claim", pl.DataFrame({"claim_id": ["C1"]}), "train")


def test_bad_arguments(dataset):
    with pytest.raises(ValueError, match="group_level"):
        entity_grouped_split(dataset, "patient")
    with pytest.raises(ValueError, match="test_fraction"):
        entity_grouped_split(dataset, "doctor", test_fraction=1.0)
    with pytest.raises(ValueError, match="not patients, doctors"):
        entity_grouped_split(dataset, "doctor",
                             groups=pl.DataFrame({"entity_id": ["D99"], "group_id": ["g"]}))
    with pytest.raises(KeyError, match="group_id"):
        entity_grouped_split(dataset, "doctor", groups=pl.DataFrame({"entity_id": ["D00"]}))
    everyone = pl.DataFrame({"entity_id": [f"F{i}" for i in range(N_FAC)],
                             "group_id": ["g"] * N_FAC})
    with pytest.raises(ValueError, match="one connected unit"):
        entity_grouped_split(dataset, "facility", groups=everyone)


def test_split_is_a_plain_dataclass():
    split = Split("temporal", (date(2024, 1, 1), date(2024, 1, 31)),
                  (date(2024, 2, 1), date(2024, 2, 28)))
    assert split.window("test") == (date(2024, 2, 1), date(2024, 2, 28))
    assert not split.grouped
