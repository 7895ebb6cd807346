"""Hand-built FeatureSets with planted anomalies, shared by the detector tests (see conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels
from medfraud.schema import LEVEL_ID

ENTITY_SIZES = {"patient": 300, "doctor": 200, "pharmacy": 100, "facility": 100}
N_CLAIMS = 1000
N_PLANTED = 20


@dataclass
class Planted:
    features: FeatureSet
    labels: Labels
    planted: dict[str, set[str]]  # level -> planted ids


def _frame(level: str, n: int, rng: np.random.Generator, n_planted: int) -> tuple[pl.DataFrame, set[str]]:
    prefix = {"claim": "C", "patient": "P", "doctor": "D", "pharmacy": "R", "facility": "F"}[level]
    ids = np.array([f"{prefix}{i:05d}" for i in range(n)])
    X = rng.normal(size=(n, 6))
    X[:, 3] = rng.exponential(size=n)  # a skewed column
    planted_rows = rng.choice(n, n_planted, replace=False)
    X[planted_rows, :3] += 6.0  # planted anomalies: far out on three features
    X[rng.random((n, 6)) < 0.02] = np.nan  # some missing values
    frame = pl.DataFrame({LEVEL_ID[level]: ids, **{f"{level[:2]}_f{j}": X[:, j] for j in range(6)}})
    return frame, set(ids[planted_rows].tolist())


def build_planted(seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)
    frames, columns, planted = {}, {}, {}
    for level, n in ENTITY_SIZES.items():
        frames[level], planted[level] = _frame(level, n, rng, max(3, n // 20))
        columns[level] = [c for c in frames[level].columns if c != LEVEL_ID[level]]
    claims, planted["claim"] = _frame("claim", N_CLAIMS, rng, N_PLANTED)
    columns["claim"] = [c for c in claims.columns if c != "claim_id"]
    context = {level: frames[level][LEVEL_ID[level]].to_numpy()[rng.integers(0, n, N_CLAIMS)]
               for level, n in ENTITY_SIZES.items()}
    pharmacy = np.where(rng.random(N_CLAIMS) < 0.3, None, context["pharmacy"])
    claims = claims.with_columns(
        pl.Series("patient_id", context["patient"]), pl.Series("doctor_id", context["doctor"]),
        pl.Series("facility_id", context["facility"]), pl.Series("pharmacy_id", pharmacy.tolist(), dtype=pl.String),
        pl.Series("fund_paid", rng.gamma(2.0, 300.0, N_CLAIMS)),
        pl.Series("total_amount", rng.gamma(2.0, 400.0, N_CLAIMS)))
    frames["claim"] = claims
    labels_claims = pl.DataFrame({"claim_id": sorted(planted["claim"]), "typology": "upcoding",
                                  "ring_id": None}, schema={"claim_id": pl.String, "typology": pl.String,
                                                            "ring_id": pl.String})
    typology_of = {"patient": "phantom_patient", "doctor": "collusion_ring",
                   "pharmacy": "inventory_mismatch", "facility": "upcoding"}
    entity_rows = [(level, i, typology_of[level]) for level in ENTITY_SIZES for i in sorted(planted[level])]
    labels_entities = pl.DataFrame({"entity_type": [r[0] for r in entity_rows],
                                    "entity_id": [r[1] for r in entity_rows],
                                    "typology": [r[2] for r in entity_rows], "ring_id": None},
                                   schema={"entity_type": pl.String, "entity_id": pl.String,
                                           "typology": pl.String, "ring_id": pl.String})
    # A biased partial audit: 60 % of the positives and 15 % of the other rows.
    audited_parts = []
    for level in ("claim", *ENTITY_SIZES):
        ids = frames[level][LEVEL_ID[level]]
        is_pos = ids.is_in(list(planted[level])).to_numpy()
        take = rng.random(len(ids)) < np.where(is_pos, 0.6, 0.15)
        audited_parts.append(pl.DataFrame({
            "entity_type": level, "entity_id": ids.filter(pl.Series(take)),
            "audited_on": date(2024, 6, 30), "is_fraud": is_pos[take],
            "typology": pl.Series(np.where(is_pos[take], "upcoding" if level == "claim"
                                           else typology_of[level], None).tolist(), dtype=pl.String)}))
    labels = Labels(labels_claims, labels_entities, pl.concat(audited_parts))
    return Planted(FeatureSet(frames, columns), labels, planted)


def auroc(scores: pl.DataFrame, planted: set[str]) -> float:
    from sklearn.metrics import roc_auc_score

    y = scores["id"].is_in(list(planted)).to_numpy()
    return float(roc_auc_score(y, scores["score"].to_numpy()))
