"""Building blocks shared by typology modules (fraudulent claims look like honest ones)."""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import (
    LINE_SCHEMA, Shard, claims_frame, consult_lines, pick_in_group, rx_frame, service_lines,
    settle_seconds,
)


def alive_candidates(shard: Shard, region: int | None = None) -> np.ndarray:
    """Local patients alive all period, not used by another patient-level typology."""
    ok = (shard.death_day >= shard.world.n_days) & ~shard.taken
    if region is not None:
        ok &= shard.region == region
    return np.flatnonzero(ok)


def drug_sale_lines(shard: Shard, claim_nos: np.ndarray, drug: np.ndarray, daily: np.ndarray,
                    days: np.ndarray) -> pl.DataFrame:
    """One drug line per claim with ``quantity = daily × days``."""
    w = shard.world
    return pl.DataFrame({"claim_no": claim_nos, "item": drug.astype(np.int32),
                         "quantity": (daily * days).astype(np.float64),
                         "days_supply": days.astype(np.int32),
                         "unit_price": w.item_price[drug]}).cast(LINE_SCHEMA)


def pharmacy_sales(shard: Shard, rng: np.random.Generator, local: np.ndarray, doc: np.ndarray,
                   day: np.ndarray, ph: np.ndarray, drug: np.ndarray, daily: np.ndarray,
                   days: np.ndarray, channel: str = "flowed") -> np.ndarray:
    """Append pharmacy-sale claims (one drug line, one prescription each); return claim numbers."""
    w = shard.world
    n = len(local)
    nos = shard.new_claim_nos(n)
    diag = w.acute_diags[rng.integers(0, len(w.acute_diags), n)]
    chronic = w.drug_chronic[drug]
    diag = np.where(chronic, w.chronic_diags[rng.integers(0, len(w.chronic_diags), n)], diag)
    claims = claims_frame(nos, shard.pat_index[local], doc, w.doc_fac[doc], ph, "pharmacy", day, diag,
                          settle_seconds(rng, n))
    shard.append(claims, drug_sale_lines(shard, nos, drug, daily, days), rx_frame(nos, channel, rng))
    return nos


def outpatient_visits(shard: Shard, rng: np.random.Generator, local: np.ndarray, doc: np.ndarray,
                      fac: np.ndarray, day: np.ndarray, exams: bool = True) -> np.ndarray:
    """Append outpatient claims (consultation plus exams); return claim numbers."""
    w = shard.world
    n = len(local)
    nos = shard.new_claim_nos(n)
    diag = w.acute_diags[rng.integers(0, len(w.acute_diags), n)]
    claims = claims_frame(nos, shard.pat_index[local], doc, fac, -1, "outpatient", day, diag,
                          settle_seconds(rng, n))
    lines = [consult_lines(shard, nos)]
    if exams:
        lines.append(service_lines(shard, rng, nos, 1 + rng.poisson(0.5, n), w.exam_items))
    shard.append(claims, pl.concat(lines))
    return nos


def doctor_in_facility(shard: Shard, rng: np.random.Generator, fac: np.ndarray) -> np.ndarray:
    w = shard.world
    return pick_in_group(rng, fac, w.fac_doc_start, w.fac_doc_count)


def split_counts(total: int, parts: int) -> np.ndarray:
    """``total`` split into ``parts`` near-equal non-negative integers."""
    base = np.full(parts, total // parts)
    base[: total % parts] += 1
    return base


def patient_id_series(shard: Shard, local: np.ndarray) -> pl.Series:
    """Contract patient ids of local patients."""
    from data_synth.finalize import patient_ids

    return pl.DataFrame({"p": shard.pat_index[local]}).select(patient_ids(pl.col("p")).alias("p"))["p"] \
        if len(local) else pl.Series("p", [], dtype=pl.String)
