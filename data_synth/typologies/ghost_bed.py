"""ghost_bed (挂床住院): stays billed while the patient is not really in hospital.

Variants: ``empty_days`` (bed days billed with treatment lines on few days — about 10 %
blatant, up to 55 % camouflaged, against 85 % honest), ``outpatient_during`` (the patient
bills an outpatient visit at another facility during the stay) and ``overlap`` (a second,
overlapping stay at another hospital).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import claims_frame, inpatient_lines, pick_in_group, settle_seconds
from data_synth.typologies._common import doctor_in_facility, outpatient_visits

NAME = "ghost_bed"
DEFAULT_PARAMS = {"outpatient_share": 0.25, "overlap_share": 0.15}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo, p = shard.world, cfg.camouflage, cfg.params
    stays = shard.claims.filter(pl.Series(shard.honest_mask()) & (pl.col("setting") == "inpatient")
                                & ((pl.col("discharge") - pl.col("admit")) >= 3))
    if stays.height == 0:
        return
    weight = shard.month_weight_of_days(stays["day"].to_numpy(), cfg.drift)
    pick = stays[shard.choose(rng, np.arange(stays.height), target, weight)]
    n = pick.height
    u = rng.random(n)
    out_v = u < p["outpatient_share"]
    overlap_v = (~out_v) & (u < p["outpatient_share"] + p["overlap_share"])
    empty_v = ~(out_v | overlap_v)
    keep_share = 0.1 + 0.45 * camo
    labelled = []   # stays with an extra claim are labelled once that claim exists

    # Outpatient visit elsewhere during the stay.
    out = pick.filter(pl.Series(out_v))
    if out.height:
        local = shard.local_of(out["pat"].to_numpy())
        region = shard.region[local]
        fac = pick_in_group(rng, region, w.fac_region_start, w.fac_region_count)
        fac = np.where(fac == out["fac"].to_numpy(), pick_in_group(rng, region, w.fac_region_start,
                                                                   w.fac_region_count), fac)
        doc = doctor_in_facility(shard, rng, fac)
        day = out["admit"].to_numpy() + 1 + rng.integers(0, np.maximum(1, (out["discharge"] - out["admit"])
                                                                      .to_numpy() - 1))
        on = w.duty[doc, np.minimum(day, w.n_days - 1)] & (fac != out["fac"].to_numpy())
        labelled.append(outpatient_visits(shard, rng, local[on], doc[on], fac[on], day[on]))
        labelled.append(out["claim_no"].to_numpy()[on])
        failed = np.flatnonzero(out_v)[~on]
        empty_v[failed] = True                       # no visit possible: bill empty days instead

    # Overlapping stay at another hospital.
    ov = pick.filter(pl.Series(overlap_v))
    if ov.height:
        local = shard.local_of(ov["pat"].to_numpy())
        fac = w.inpatient_fac[pick_in_group(rng, shard.region[local], w.inpatient_fac_start,
                                            w.inpatient_fac_count)]
        doc = doctor_in_facility(shard, rng, fac)
        admit = ov["admit"].to_numpy() + 1 + rng.integers(0, 2, ov.height)
        ok = (w.duty[doc, np.minimum(admit, w.n_days - 1)]) & (fac != ov["fac"].to_numpy())
        los = np.clip(np.round(rng.lognormal(np.log(5), 0.4, ov.height)), 2, 15).astype(np.int32)
        discharge = admit + los
        ok &= (discharge < w.n_days) & (discharge < shard.death_day[local])
        k = int(ok.sum())
        if k:
            nos = shard.new_claim_nos(k)
            diag = w.inpatient_diags[rng.integers(0, len(w.inpatient_diags), k)]
            claims = claims_frame(nos, ov["pat"].to_numpy()[ok], doc[ok], fac[ok], -1, "inpatient", admit[ok],
                                  diag, settle_seconds(rng, k), admit=admit[ok], discharge=discharge[ok],
                                  drg=w.diag_drg[diag])
            shard.append(claims, inpatient_lines(shard, rng, nos, local[ok], admit[ok], los[ok], fac[ok],
                                                 treatment_share=keep_share))
            labelled.append(nos)
            labelled.append(ov["claim_no"].to_numpy()[ok])
        empty_v[np.flatnonzero(overlap_v)[~ok]] = True
    # Empty days: rebuild the treatment lines of the chosen stays with a low treatment share.
    empty = pick.filter(pl.Series(empty_v))
    if empty.height:
        labelled.append(empty["claim_no"].to_numpy())
        nos = empty["claim_no"].to_numpy()
        treat = pl.Series(w.treatment_items.astype(np.int32)).implode()
        is_target = pl.col("claim_no").is_in(pl.Series(nos).implode()) & pl.col("item").is_in(treat)
        shard.lines = shard.lines.filter(~is_target)
        los = (empty["discharge"] - empty["admit"]).to_numpy()
        n_treat = rng.binomial(los, keep_share)
        rep = np.repeat(nos, n_treat)
        item = w.treatment_items[rng.integers(0, len(w.treatment_items), len(rep))]
        shard.append(shard.claims.head(0), pl.DataFrame({
            "claim_no": rep, "item": item, "quantity": 1.0,
            "days_supply": pl.Series([None] * len(rep), dtype=pl.Int32), "unit_price": w.item_price[item]}))

    shard.label(np.concatenate(labelled), NAME)


def world_entities(world, cfg):
    return None
