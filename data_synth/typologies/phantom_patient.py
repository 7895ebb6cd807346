"""phantom_patient (虚构身份 / 冒名就医): claims for the dead, the non-existent and borrowed cards.

Three variants, mixed by ``dead_share`` / ``unregistered_share`` (the rest borrowed cards):

* dead: a patient whose honest activity has ended is given a death date after it, and
  claims keep coming after that date (camouflage keeps them close to the death date);
* unregistered: registry rows with impossible attributes (age over 105, or — camouflaged —
  a birth date after the first service) carrying a few claims each;
* borrowed card: on a day the patient really visited a doctor, the same card is used at
  other facilities in a distant region (camouflage: a neighbouring region).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import NO_DEATH, PHANTOM_BLOCK, pick_in_group, pick_weighted_in_group
from data_synth.typologies._common import (
    alive_candidates, doctor_in_facility, outpatient_visits, patient_id_series, split_counts,
)

NAME = "phantom_patient"
DEFAULT_PARAMS = {"dead_share": 0.4, "unregistered_share": 0.3, "claims_per_patient": 4}


def _visits(shard, rng, local, day):
    """Outpatient visits at random facilities of the patient's region, doctor on duty."""
    w = shard.world
    fac = pick_weighted_in_group(rng, shard.region[local], w.fac_region_start, w.fac_region_count,
                                 w.fac_weight)
    doc = doctor_in_facility(shard, rng, fac)
    return outpatient_visits(shard, rng, local, doc, fac, shard.on_duty_day(doc, day))


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo, p = shard.world, cfg.camouflage, cfg.params
    per = max(1, int(p["claims_per_patient"]))
    n_dead = int(round(target * p["dead_share"]))
    n_unreg = int(round(target * p["unregistered_share"]))
    n_borrow = target - n_dead - n_unreg
    labelled_patients = []

    # Dead: death date set after the patient's last honest activity.
    if n_dead:
        last = (shard.claims.with_columns(pl.max_horizontal("day", "discharge").alias("last"))
                .group_by("pat").agg(pl.col("last").max()))
        last_day = np.full(shard.n_patients, -1)
        pos = shard.local_of(last["pat"].to_numpy())
        last_day[pos] = last["last"].to_numpy()
        cand = alive_candidates(shard)
        cand = cand[last_day[cand] < w.n_days - 45]
        chosen = shard.choose(rng, cand, max(1, n_dead // per))
        if len(chosen):
            shard.taken[chosen] = True
            death = last_day[chosen] + 1 + rng.integers(0, 10, len(chosen))
            shard.death_day[chosen] = death
            local = np.repeat(chosen, split_counts(n_dead, len(chosen)))
            room = w.n_days - 1 - shard.death_day[local]
            gap_max = np.maximum(1, np.minimum(room, 3 + (1 - camo) * room))
            day = shard.death_day[local] + 1 + np.floor(rng.random(len(local)) * gap_max).astype(int)
            nos = _visits(shard, rng, local, day)
            # on_duty_day may move a visit before the death date; those are re-dated forward only.
            fix = _after_death(shard, nos)
            shard.label(fix, NAME)
            labelled_patients.append(np.unique(local))

    # Unregistered: new registry rows with impossible attributes.
    if n_unreg:
        k = max(1, n_unreg // per)
        first_day = np.sort(rng.integers(0, w.n_days, k))
        region = rng.choice(len(w.region_codes), size=k, p=w.region_weight)
        later_birth = rng.random(k) < camo
        birth = np.where(later_birth, first_day + rng.integers(1, 400, k),
                         -(np.floor(rng.uniform(106, 125, k) * 365.25))).astype(np.int32)
        new = shard.add_patients(
            pat_index=shard.index * PHANTOM_BLOCK + np.arange(k, dtype=np.int64)
            + w.config.populations.patients + 10 * PHANTOM_BLOCK,
            sex=rng.integers(0, 2, k).astype(np.int8), birth_day=birth,
            death_day=np.full(k, NO_DEATH, np.int32), region=region,
            employee=np.zeros(k, bool), chronic=np.zeros(k, bool),
            home_fac=pick_weighted_in_group(rng, region, w.fac_region_start, w.fac_region_count,
                                            w.fac_weight),
            home_ph=pick_in_group(rng, region, w.ph_region_start, w.ph_region_count),
            activity=np.ones(k))
        counts = split_counts(n_unreg, k)
        local = np.repeat(new, counts)
        day = np.repeat(first_day, counts) + rng.integers(0, 60, len(local))
        day = np.minimum(day, w.n_days - 1)
        day[np.r_[0, np.cumsum(counts)[:-1]]] = first_day        # the first claim is on first_day
        nos = _visits(shard, rng, local, day)
        shard.label(nos, NAME)
        labelled_patients.append(new)

    # Borrowed cards: same day as a real visit, other facilities in a distant region.
    if n_borrow > 0:
        visits = shard.claims.filter(pl.Series(shard.honest_mask()) & (pl.col("setting") == "outpatient"))
        pos = shard.local_of(visits["pat"].to_numpy())
        ok = ~shard.taken[pos] & (shard.death_day[pos] >= w.n_days)
        visits, pos = visits.filter(pl.Series(ok)), pos[ok]
        k = max(1, n_borrow // 2)
        pick = shard.choose(rng, np.arange(visits.height), k)
        if len(pick):
            local = pos[pick]
            first = np.unique(local, return_index=True)[1]
            pick, local = pick[first], local[first]                 # one borrowed day per card
            shard.taken[local] = True
            n_regions = len(w.region_codes)
            far = (shard.region[local] + np.maximum(1, n_regions // 2)) % n_regions
            near = (shard.region[local] + 1) % n_regions
            region = np.where(rng.random(len(local)) < camo, near, far)
            region = np.repeat(region, 2)
            local2 = np.repeat(local, 2)
            day = np.repeat(visits["day"].to_numpy()[pick], 2)
            fac = pick_weighted_in_group(rng, region, w.fac_region_start, w.fac_region_count, w.fac_weight)
            doc = doctor_in_facility(shard, rng, fac)
            on = w.duty[doc, day]
            local2, fac, doc, day = local2[on], fac[on], doc[on], day[on]
            nos = outpatient_visits(shard, rng, local2, doc, fac, day)
            shard.label(nos, NAME)
            labelled_patients.append(np.unique(local2))

    if labelled_patients:
        who = np.unique(np.concatenate(labelled_patients))
        shard.label_entities("patient", patient_id_series(shard, who), NAME)


def _after_death(shard, nos: np.ndarray) -> np.ndarray:
    """Keep only the new claims dated after the patient's death (drop the others)."""
    new = shard.claims.filter(pl.col("claim_no").is_in(pl.Series(nos).implode()))
    pos = shard.local_of(new["pat"].to_numpy())
    bad = new["day"].to_numpy() <= shard.death_day[pos]
    if bad.any():
        drop = pl.Series(new["claim_no"].to_numpy()[bad]).implode()
        shard.claims = shard.claims.filter(~pl.col("claim_no").is_in(drop))
        shard.lines = shard.lines.filter(~pl.col("claim_no").is_in(drop))
    return new["claim_no"].to_numpy()[~bad]


def world_entities(world, cfg):
    return None
