"""doctor_absent (医师脱岗): claims signed by a doctor who was not on duty.

Copies of honest outpatient visits are re-dated to a day the signing doctor is off the
roster (``absent``), or billed on a duty day at another facility of the same region
(``two_facilities``: the doctor appears in two places the same day).  Camouflage moves
cases from the blatant off-duty form to the two-facility form, which only a join of the
claims with the roster *and* facility reveals.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import LINE_SCHEMA

NAME = "doctor_absent"
DEFAULT_PARAMS = {"two_facility_share": 0.3}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo = shard.world, cfg.camouflage
    visits = shard.claims.filter(pl.Series(shard.honest_mask()) & (pl.col("setting") == "outpatient"))
    if visits.height == 0:
        return
    weight = shard.month_weight_of_days(visits["day"].to_numpy(), cfg.drift)
    pick = visits[shard.choose(rng, np.arange(visits.height), target, weight)]
    n = pick.height
    doc = pick["doc"].to_numpy()
    local = shard.local_of(pick["pat"].to_numpy())
    two = rng.random(n) < cfg.params["two_facility_share"] + (1 - cfg.params["two_facility_share"]) * camo * 0.8
    # absent: the first off-roster day after a random offset
    off = w.next_off[doc, np.clip(pick["day"].to_numpy() + rng.integers(1, 15, n), 0, w.n_days)]
    # two facilities: a duty day, billed at another facility of the region
    duty_day = w.next_duty[doc, np.clip(pick["day"].to_numpy() + rng.integers(1, 15, n), 0, w.n_days)]
    other = _other_facility(rng, w, w.doc_fac[doc])
    day = np.where(two, duty_day, off).astype(np.int32)
    fac = np.where(two, other, w.doc_fac[doc])
    ok = (day < w.n_days) & (day < shard.death_day[local])
    pick, day, fac = pick.filter(pl.Series(ok)), day[ok], fac[ok]
    k = pick.height
    if k == 0:
        return
    nos = shard.new_claim_nos(k)
    copies = pick.with_columns(pl.Series("claim_no_new", nos), pl.Series("day", day, dtype=pl.Int32),
                               pl.Series("fac", fac, dtype=pl.Int32))
    lines = (shard.lines.join(copies.select("claim_no", "claim_no_new"), on="claim_no", maintain_order="left")
             .with_columns(pl.col("claim_no_new").alias("claim_no")).select(list(LINE_SCHEMA)))
    shard.append(copies.with_columns(pl.col("claim_no_new").alias("claim_no")), lines)
    shard.label(nos, NAME)


def _other_facility(rng, w, own: np.ndarray) -> np.ndarray:
    """A facility other than ``own``: same region when it has several, else the next region."""
    region = w.fac_region[own]
    single = w.fac_region_count[region] < 2
    region = np.where(single, (region + 1) % len(w.region_codes), region)
    count = w.fac_region_count[region] - (~single)
    pos = w.fac_region_start[region] + np.floor(rng.random(len(own)) * count).astype(np.int64)
    return np.where(~single & (pos >= own), pos + 1, pos)


def world_entities(world, cfg):
    return None
