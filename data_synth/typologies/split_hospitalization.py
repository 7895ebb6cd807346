"""split_hospitalization (分解住院): discharge and readmission for the same condition within 15 days.

An honest stay is followed, ``gap`` days after discharge, by a second stay at the same
facility with the same diagnosis and DRG base group, billed as a separate case; both
claims are labelled.  Blatant splits readmit after 1–3 days; camouflage pushes the gap
toward the 15-day limit.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import claims_frame, inpatient_lines, settle_seconds

NAME = "split_hospitalization"
DEFAULT_PARAMS = {"max_gap": 15}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target < 2:
        return
    w, camo = shard.world, cfg.camouflage
    max_gap = int(cfg.params["max_gap"])
    stays = shard.claims.filter(pl.Series(shard.honest_mask()) & (pl.col("setting") == "inpatient"))
    if stays.height == 0:
        return
    weight = shard.month_weight_of_days(stays["day"].to_numpy(), cfg.drift)
    pick = stays[shard.choose(rng, np.arange(stays.height), target // 2, weight)]
    n = pick.height
    local = shard.local_of(pick["pat"].to_numpy())
    hi = 3 + camo * (max_gap - 3)
    gap = 1 + np.floor(rng.random(n) * hi).astype(int)
    doc = pick["doc"].to_numpy()
    admit = shard.on_duty_day(doc, pick["discharge"].to_numpy() + gap)
    los = np.clip(np.round(rng.lognormal(np.log(5), 0.4, n)), 1, 20).astype(np.int32)
    discharge = admit + los
    real_gap = admit - pick["discharge"].to_numpy()
    ok = (real_gap >= 1) & (real_gap <= max_gap) & (discharge < w.n_days) & \
        (discharge < shard.death_day[local])
    pick, local, admit, los, discharge, doc = pick.filter(pl.Series(ok)), local[ok], admit[ok], los[ok], \
        discharge[ok], doc[ok]
    n = pick.height
    if n == 0:
        return
    nos = shard.new_claim_nos(n)
    fac = pick["fac"].to_numpy()
    diag = pick["diag"].to_numpy()
    claims = claims_frame(nos, pick["pat"].to_numpy(), doc, fac, -1, "inpatient", admit, diag,
                          settle_seconds(rng, n), admit=admit, discharge=discharge, drg=w.diag_drg[diag])
    shard.append(claims, inpatient_lines(shard, rng, nos, local, admit, los, fac))
    shard.label(np.concatenate([pick["claim_no"].to_numpy(), nos]), NAME)


def world_entities(world, cfg):
    return None
