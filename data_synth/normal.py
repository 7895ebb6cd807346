"""Honest behaviour of one patient block: the registry rows and their normal claims.

Visit counts are Poisson with a gamma-distributed per-patient activity (heavy tail), days
follow the world's seasonal × weekday weights and are moved to the doctor's next duty day,
so every honest claim is signed by a doctor on duty, before the patient's death, with
drugs the patient may receive and doses within the label.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import (
    CLAIM_SCHEMA, LINE_SCHEMA, NO_DEATH, RX_SCHEMA, STREAM_NORMAL, STREAM_PATIENTS, Shard,
    claims_frame, consult_lines, drug_lines, inpatient_lines, other_region, pick_in_group,
    pick_weighted_in_group, rx_frame, service_lines, settle_seconds,
)
from data_synth.world import World

_AGES = np.arange(100)
_AGE_P = np.where(_AGES < 60, 1.0, np.exp(-(_AGES - 60) / 12.0))
_AGE_P /= _AGE_P.sum()


def make_shard(world: World, index: int, first_patient: int, n_patients: int) -> Shard:
    """Draw the registry attributes of patients ``first_patient … + n_patients - 1``."""
    config, care = world.config, world.config.care
    rng = np.random.default_rng([config.seed, index, STREAM_PATIENTS])
    n = n_patients
    age = rng.choice(_AGES, size=n, p=_AGE_P)
    birth_day = -(np.floor(age * 365.25) + rng.integers(0, 365, n)).astype(np.int32)
    sex = (rng.random(n) < 0.5).astype(np.int8)
    region = rng.choice(len(world.region_codes), size=n, p=world.region_weight)
    employee = np.where((age >= 18) & (age < 60), rng.random(n) < 0.65,
                        (age >= 60) & (rng.random(n) < 0.45))
    age_factor = 0.3 + age / 40.0
    chronic = rng.random(n) < np.clip(care.chronic_share * age_factor / age_factor.mean(), 0, 0.95)
    death_factor = np.exp((age - 70) / 10.0)
    p_death = np.clip(care.death_rate * world.n_days / 365.0 * death_factor / death_factor.mean(), 0, 0.9)
    dies = rng.random(n) < p_death
    death_day = np.where(dies, rng.integers(0, world.n_days, n), NO_DEATH).astype(np.int32)
    home_fac = pick_weighted_in_group(rng, region, world.fac_region_start, world.fac_region_count,
                                      world.fac_weight)
    home_ph = pick_in_group(rng, region, world.ph_region_start, world.ph_region_count)
    activity = rng.gamma(care.activity_shape, 1.0 / care.activity_shape, n)
    return Shard(index=index, world=world, config=config,
                 pat_index=np.arange(first_patient, first_patient + n, dtype=np.int64),
                 sex=sex, birth_day=birth_day, death_day=death_day, region=region,
                 employee=employee, chronic=chronic, home_fac=home_fac, home_ph=home_ph,
                 activity=activity, taken=np.zeros(n, bool))


def generate_normal(shard: Shard) -> None:
    """Fill ``shard.claims``, ``shard.lines`` and ``shard.rx`` with honest activity."""
    rng = shard.rng(STREAM_NORMAL)
    parts = [_outpatient(shard, rng), _chronic_refills(shard, rng), _online(shard, rng),
             _inpatient(shard, rng)]
    shard.claims = pl.concat([p[0] for p in parts]).cast(CLAIM_SCHEMA)
    shard.lines = pl.concat([p[1] for p in parts]).cast(LINE_SCHEMA)
    shard.rx = pl.concat([p[2] for p in parts]).cast(RX_SCHEMA)
    shard.n_normal = shard.claims.height


def _alive(shard: Shard, local: np.ndarray, day: np.ndarray) -> np.ndarray:
    return (day >= 0) & (day < shard.death_day[local]) & (day < shard.world.n_days)


def _visit_facility(shard: Shard, rng: np.random.Generator, local: np.ndarray) -> np.ndarray:
    w, care = shard.world, shard.config.care
    region = shard.region[local]
    cross = rng.random(len(local)) < care.cross_region_share
    region = np.where(cross, other_region(rng, region, len(w.region_codes)), region)
    any_fac = pick_weighted_in_group(rng, region, w.fac_region_start, w.fac_region_count, w.fac_weight)
    home = (~cross) & (rng.random(len(local)) < care.home_facility_share)
    return np.where(home, shard.home_fac[local], any_fac)


def _pharmacy_for(shard: Shard, rng: np.random.Generator, local: np.ndarray) -> np.ndarray:
    """Mostly the patient's usual pharmacy, otherwise another one in the home region."""
    w = shard.world
    other = pick_in_group(rng, shard.region[local], w.ph_region_start, w.ph_region_count)
    return np.where(rng.random(len(local)) < 0.7, shard.home_ph[local], other)


def _flowed_pharmacy_claims(shard: Shard, rng: np.random.Generator, local: np.ndarray, doc: np.ndarray,
                            fac: np.ndarray, day: np.ndarray, diag: np.ndarray, channel: str,
                            pool: np.ndarray, ph: np.ndarray | None = None,
                            days_choices=(1, 2, 3, 3, 5, 7, 7), n_drugs: np.ndarray | None = None):
    """Pharmacy-sale claims filling prescriptions written by ``doc`` on ``day``."""
    w = shard.world
    n = len(local)
    nos = shard.new_claim_nos(n)
    ph = _pharmacy_for(shard, rng, local) if ph is None else ph
    claims = claims_frame(nos, shard.pat_index[local], doc, fac, ph, "pharmacy", day, diag,
                          settle_seconds(rng, n))
    n_drugs = 1 + rng.binomial(2, 0.4, n) if n_drugs is None else n_drugs
    lines = drug_lines(shard, rng, nos, local, day, w.fac_level[fac], n_drugs, pool, days_choices)
    return claims, lines, rx_frame(nos, channel, rng)


def _outpatient(shard: Shard, rng: np.random.Generator):
    w, care = shard.world, shard.config.care
    months = w.n_days / 30.4
    counts = rng.poisson(shard.activity * care.outpatient_rate * months)
    local = np.repeat(np.arange(shard.n_patients), counts)
    fac = _visit_facility(shard, rng, local)
    doc = pick_in_group(rng, fac, w.fac_doc_start, w.fac_doc_count)
    day = shard.on_duty_day(doc, rng.choice(w.n_days, size=len(local), p=w.day_weight))
    keep = _alive(shard, local, day)
    local, fac, doc, day = local[keep], fac[keep], doc[keep], day[keep]
    n = len(local)
    chronic_visit = shard.chronic[local] & (rng.random(n) < 0.3)
    diag = np.where(chronic_visit, w.chronic_diags[rng.integers(0, len(w.chronic_diags), n)],
                    w.acute_diags[rng.integers(0, len(w.acute_diags), n)])
    nos = shard.new_claim_nos(n)
    claims = claims_frame(nos, shard.pat_index[local], doc, fac, -1, "outpatient", day, diag,
                          settle_seconds(rng, n))
    flowed = rng.random(n) < care.flow_share
    with_drugs = ~flowed & (rng.random(n) < 0.75)
    lines = [consult_lines(shard, nos),
             service_lines(shard, rng, nos, rng.poisson(0.7, n), w.exam_items),
             service_lines(shard, rng, nos, rng.binomial(1, 0.3, n), w.treatment_items),
             drug_lines(shard, rng, nos[with_drugs], local[with_drugs], day[with_drugs],
                        w.fac_level[fac[with_drugs]], 1 + rng.binomial(2, 0.4, with_drugs.sum()),
                        w.acute_drugs)]
    f = flowed
    ph_claims, ph_lines, rx = _flowed_pharmacy_claims(shard, rng, local[f], doc[f], fac[f], day[f],
                                                      diag[f], "flowed", w.acute_drugs)
    # Lines stay grouped by kind, not by claim: finalize sorts them stably by claim once.
    return (pl.concat([claims, ph_claims]), pl.concat([*lines, ph_lines]),
            rx)


def _chronic_refills(shard: Shard, rng: np.random.Generator):
    """Refills on schedule: the next one comes only when the previous supply has run out."""
    w = shard.world
    local = np.flatnonzero(shard.chronic)
    n = len(local)
    drug = w.chronic_drugs[rng.integers(0, len(w.chronic_drugs), n)]
    cat_pos = np.searchsorted(np.unique(w.drug_category[w.chronic_drugs]), w.drug_category[drug])
    diag = w.chronic_diags[np.minimum(cat_pos, len(w.chronic_diags) - 1)]
    supply = rng.choice([28, 30, 56, 84], size=n, p=[0.35, 0.35, 0.2, 0.1]).astype(np.int32)
    daily = np.minimum(w.drug_max_daily[drug], rng.choice([1.0, 2.0], n))
    doc = pick_in_group(rng, shard.home_fac[local], w.fac_doc_start, w.fac_doc_count)
    at_pharmacy = rng.random(n) < 0.6
    days = []
    day = shard.on_duty_day(doc, rng.integers(0, supply))
    step = 0
    while len(day) and (day < w.n_days).any() and step < 400:    # loop over refill rounds
        days.append(day.copy())
        nxt = day + supply + rng.integers(0, 4, n)
        valid = (nxt < w.n_days) & (day < w.n_days)
        moved = np.where(valid, w.next_duty[doc, np.clip(nxt, 0, w.n_days)], w.n_days)
        day = np.where(valid, moved, w.n_days).astype(np.int32)
        step += 1
    if not days:
        empty = claims_frame(np.empty(0, np.int64), *[np.empty(0, np.int64)] * 3, -1, "pharmacy",
                             *[np.empty(0, np.int64)] * 3)
        return empty, pl.DataFrame(schema=LINE_SCHEMA), pl.DataFrame(schema=RX_SCHEMA)
    all_days = np.stack(days, axis=1)                                  # (patients, rounds)
    row, _ = np.nonzero(np.ones_like(all_days, bool))
    flat_day = all_days.ravel()
    keep = (flat_day >= 0) & (flat_day < w.n_days) & (flat_day < shard.death_day[local[row]])
    row, flat_day = row[keep], flat_day[keep].astype(np.int32)
    lp, fac = local[row], shard.home_fac[local[row]]
    pharm = at_pharmacy[row]
    nos = shard.new_claim_nos(len(row))
    claims = claims_frame(nos, shard.pat_index[lp], doc[row], fac,
                          np.where(pharm, shard.home_ph[lp], -1),
                          np.where(pharm, "pharmacy", "outpatient"), flat_day, diag[row],
                          settle_seconds(rng, len(row)))
    lines = pl.DataFrame({"claim_no": nos, "item": drug[row].astype(np.int32),
                          "quantity": daily[row] * supply[row], "days_supply": supply[row],
                          "unit_price": w.item_price[drug[row]]})
    lines = pl.concat([lines.cast(LINE_SCHEMA), consult_lines(shard, nos[~pharm]).cast(LINE_SCHEMA)])
    return claims, lines, rx_frame(nos[pharm], "flowed", rng)


def _online(shard: Shard, rng: np.random.Generator):
    w, care = shard.world, shard.config.care
    counts = rng.poisson(shard.activity * care.online_rate * w.n_days / 30.4)
    local = np.repeat(np.arange(shard.n_patients), counts)
    n = len(local)
    doc = rng.integers(0, w.n_doctors, n)                      # any doctor, any region
    day = shard.on_duty_day(doc, rng.choice(w.n_days, size=n, p=w.day_weight))
    keep = _alive(shard, local, day)
    local, doc, day = local[keep], doc[keep], day[keep]
    n = len(local)
    fac = w.doc_fac[doc]
    diag = w.acute_diags[rng.integers(0, len(w.acute_diags), n)]
    nos = shard.new_claim_nos(n)
    claims = claims_frame(nos, shard.pat_index[local], doc, fac, -1, "online", day, diag,
                          settle_seconds(rng, n))
    r = rng.random(n) < care.online_rx_share
    ph_claims, ph_lines, rx = _flowed_pharmacy_claims(shard, rng, local[r], doc[r], fac[r], day[r],
                                                      diag[r], "online", w.safe_drugs)
    return pl.concat([claims, ph_claims]), pl.concat([consult_lines(shard, nos), ph_lines]), rx


def _inpatient(shard: Shard, rng: np.random.Generator):
    """Stays at level-2/3 hospitals; a patient's stays are at least 30 days apart."""
    w, care = shard.world, shard.config.care
    age = -shard.birth_day / 365.25
    rate = care.inpatient_rate * np.sqrt(shard.activity) * (0.5 + age / 50.0)
    counts = rng.poisson(rate * w.n_days / 30.4)
    local = np.repeat(np.arange(shard.n_patients), counts)
    n = len(local)
    fac = w.inpatient_fac[pick_in_group(rng, shard.region[local], w.inpatient_fac_start,
                                        w.inpatient_fac_count)]
    doc = pick_in_group(rng, fac, w.fac_doc_start, w.fac_doc_count)
    admit = shard.on_duty_day(doc, rng.choice(w.n_days, size=n, p=w.day_weight))
    los = np.clip(np.round(rng.lognormal(np.log(6), 0.5, n)), 1, 30).astype(np.int32)
    discharge = admit + los
    keep = (admit >= 0) & (discharge < w.n_days) & (discharge < shard.death_day[local])
    local, fac, doc, admit, los, discharge = (a[keep] for a in (local, fac, doc, admit, los, discharge))
    order = np.lexsort((admit, local))
    local, fac, doc, admit, los, discharge = (a[order] for a in (local, fac, doc, admit, los, discharge))
    prev_max = (pl.DataFrame({"p": local, "d": discharge})
                .select(pl.col("d").cum_max().shift(1).over("p").fill_null(-10_000))["d"].to_numpy())
    keep = admit >= prev_max + 30
    local, fac, doc, admit, los, discharge = (a[keep] for a in (local, fac, doc, admit, los, discharge))
    n = len(local)
    diag = w.inpatient_diags[rng.integers(0, len(w.inpatient_diags), n)]
    drg = w.diag_drg[diag] + (rng.random(n) < 0.2)
    nos = shard.new_claim_nos(n)
    claims = claims_frame(nos, shard.pat_index[local], doc, fac, -1, "inpatient", admit, diag,
                          settle_seconds(rng, n), admit=admit, discharge=discharge, drg=drg)
    lines = inpatient_lines(shard, rng, nos, local, admit, los, fac)
    return claims, lines, pl.DataFrame(schema=RX_SCHEMA)
