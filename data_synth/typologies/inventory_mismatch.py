"""inventory_mismatch (串换药品 / 进销存不符): a pharmacy sells more than it ever bought.

A share ``pharmacy_share`` of pharmacies each bill one expensive reimbursable drug they
hold no opening stock of; only ``cover`` of those sales is backed by purchases (blatant:
none; camouflage raises the cover toward 80 %, shrinking the excess), and they buy cheap
non-reimbursable goods in its place (the 串换 pattern).  Their other sales are restocked
like any pharmacy's.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import pick_in_group
from data_synth.typologies._common import (
    alive_candidates, doctor_in_facility, pharmacy_sales, split_counts,
)

NAME = "inventory_mismatch"
DEFAULT_PARAMS = {"pharmacy_share": 0.05}


def plan(world, cfg, rng) -> None:
    n = max(1, round(cfg.params["pharmacy_share"] * world.n_pharmacies))
    pharmacies = np.sort(rng.choice(world.n_pharmacies, size=min(n, world.n_pharmacies), replace=False))
    drugs = rng.choice(world.expensive_drugs, size=len(pharmacies))
    cheap_pool = np.flatnonzero(~world.drug_reimbursable & (world.drug_price < np.median(world.drug_price)))
    if len(cheap_pool) == 0:
        cheap_pool = np.argsort(world.drug_price)[:10]
    cheap = rng.choice(cheap_pool, size=len(pharmacies))
    world.extra[NAME] = {"pharmacies": pharmacies, "drugs": drugs, "cheap": cheap,
                         "hit": np.zeros(len(pharmacies), bool)}


def opening_exclusions(world) -> dict[int, set[int]]:
    state = world.extra.get(NAME)
    if not state:
        return {}
    return {int(p): {int(d)} for p, d in zip(state["pharmacies"], state["drugs"])}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    state = shard.world.extra[NAME]
    if target <= 0 or len(state["pharmacies"]) == 0:
        return
    w, camo = shard.world, cfg.camouflage
    cover = 0.8 * camo
    # All fraudulent pharmacies at once (there are hundreds at scale): buyers are alive
    # patients of the pharmacy's region, drawn through region-sorted candidate slices.
    pharmacies, drugs, cheap = state["pharmacies"], state["drugs"], state["cheap"]
    counts = split_counts(target, len(pharmacies))
    cand = alive_candidates(shard)
    cand = cand[np.argsort(shard.region[cand], kind="stable")]
    n_regions = len(w.region_codes)
    pool_count = np.bincount(shard.region[cand], minlength=n_regions)
    pool_start = np.concatenate([[0], np.cumsum(pool_count)[:-1]])
    region = w.ph_region[pharmacies]
    active = (counts > 0) & (pool_count[region] > 0)              # (pharmacies,)
    which = np.repeat(np.flatnonzero(active), counts[active])     # pharmacy position of each sale
    if len(which) == 0:
        return
    local = pick_in_group(rng, region[which], pool_start, pool_count, cand)
    doc = doctor_in_facility(shard, rng, shard.home_fac[local])
    day = shard.on_duty_day(doc, shard.fraud_days(rng, len(which), cfg.drift))
    ok = day >= 0
    which, local, doc, day = which[ok], local[ok], doc[ok], day[ok]
    drug = drugs[which]
    days = np.full(len(which), 7)
    daily = w.drug_max_daily[drug].astype(np.float64)
    nos = pharmacy_sales(shard, rng, local, doc, day, pharmacies[which], drug, daily, days)
    # Purchases per active pharmacy: cheap goods for the whole quantity sold (on the first
    # month with a sale, day 0 when none) and, camouflaged, part of the drug itself.
    n_ph = len(pharmacies)
    qty = np.bincount(which, weights=daily * days, minlength=n_ph)
    month_day = w.month_start_day[w.month_of_day[day]]
    first = np.full(n_ph, np.iinfo(np.int64).max)
    np.minimum.at(first, which, month_day)
    first = np.where(first == np.iinfo(np.int64).max, 0, first)
    buyers = np.flatnonzero(active)
    supplier = w.supplier_of_pharmacy[pharmacies[buyers]]
    frames = [pl.DataFrame({"ph": pharmacies[buyers], "item": cheap[buyers], "day": first[buyers],
                            "quantity": np.ceil(qty[buyers]), "supplier": supplier})]
    if cover > 0:
        frames.append(pl.DataFrame({"ph": pharmacies[buyers], "item": drugs[buyers], "day": first[buyers],
                                    "quantity": np.floor(qty[buyers] * cover), "supplier": supplier}))
    shard.extra_purchases.append(pl.concat(frames).cast({"ph": pl.Int64, "item": pl.Int64, "day": pl.Int64,
                                                          "quantity": pl.Float64, "supplier": pl.Int64}))
    state["hit"][np.unique(which)] = True
    shard.label(nos, NAME)


def world_entities(world, cfg):
    state = world.extra.get(NAME)
    if not state or not state["hit"].any():
        return None
    ph = state["pharmacies"][state["hit"]]
    return pl.DataFrame({"entity_type": "pharmacy", "entity_id": world.pharmacy_ids.gather(ph),
                         "typology": NAME, "ring_id": pl.Series([None] * len(ph), dtype=pl.String)})
