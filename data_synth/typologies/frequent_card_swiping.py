"""frequent_card_swiping (频繁刷卡): one card used far more often than normal.

Chosen patients buy at their pharmacy ``monthly_swipes`` times a month (above the
4-a-month rule; camouflage brings it down to 5 and spreads it over up to three pharmacies)
and, on a few days, visit ``facilities_per_day`` different facilities the same day.
"""

from __future__ import annotations

import numpy as np

from data_synth.shard import pick_in_group
from data_synth.typologies._common import (
    alive_candidates, doctor_in_facility, outpatient_visits, patient_id_series, pharmacy_sales,
)

NAME = "frequent_card_swiping"
DEFAULT_PARAMS = {"monthly_swipes": 8, "facilities_per_day": 4, "multi_facility_days": 2,
                  "active_months": 3}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo, p = shard.world, cfg.camouflage, cfg.params
    swipes = max(5, int(round(5 + (p["monthly_swipes"] - 5) * cfg.intensity * (1 - camo))))
    months = min(int(p["active_months"]), w.config.months)
    per_day = int(p["facilities_per_day"])
    per_patient = swipes * months + int(p["multi_facility_days"]) * per_day
    k = max(1, int(round(target / per_patient)))
    chosen = shard.choose(rng, alive_candidates(shard), k)
    if len(chosen) == 0:
        return
    shard.taken[chosen] = True
    k = len(chosen)
    # Pharmacy swipes: `swipes` sales in each active month at the usual pharmacy (or a few).
    mw = shard.month_weight_of_days(w.month_start_day, cfg.drift)
    month = np.stack([rng.choice(w.config.months, size=months, replace=False, p=mw / mw.sum())
                      for _ in range(k)]) if months < w.config.months else \
        np.tile(np.arange(months), (k, 1))                      # loop over chosen patients (few)
    local = np.repeat(chosen, months * swipes)
    m = np.repeat(month.ravel(), swipes)
    start = w.month_start_day[m]
    length = np.diff(np.append(w.month_start_day, w.n_days))[m]
    day = start + np.floor(rng.random(len(local)) * length).astype(int)
    n_ph = 1 + int(round(2 * camo))
    ph = np.where(rng.integers(0, n_ph, len(local)) == 0, shard.home_ph[local],
                  pick_in_group(rng, shard.region[local], w.ph_region_start, w.ph_region_count))
    doc = doctor_in_facility(shard, rng, shard.home_fac[local])
    day = shard.on_duty_day(doc, day)
    ok = day >= 0
    drug = w.safe_drugs[rng.integers(0, len(w.safe_drugs), ok.sum())]
    days = np.full(ok.sum(), 3)
    daily = np.maximum(0.5, w.drug_max_daily[drug] / 2)
    nos = [pharmacy_sales(shard, rng, local[ok], doc[ok], day[ok], ph[ok], drug, daily, days)]
    # Many facilities a day.
    n_days = int(p["multi_facility_days"])
    if n_days and per_day > 1:
        local = np.repeat(chosen, n_days * per_day)
        base_day = np.repeat(shard.fraud_days(rng, k * n_days, cfg.drift), per_day)
        fac = pick_in_group(rng, shard.region[local], w.fac_region_start, w.fac_region_count)
        doc = doctor_in_facility(shard, rng, fac)
        on = w.duty[doc, base_day]
        nos.append(outpatient_visits(shard, rng, local[on], doc[on], fac[on], base_day[on]))
    shard.label(np.concatenate(nos), NAME)
    shard.label_entities("patient", patient_id_series(shard, chosen), NAME)


def world_entities(world, cfg):
    return None
