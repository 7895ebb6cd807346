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
    counts = split_counts(target, len(state["pharmacies"]))
    cover = 0.8 * camo
    all_nos = []
    for i, (ph, drug, cheap, n) in enumerate(zip(state["pharmacies"], state["drugs"], state["cheap"],
                                                 counts)):
        pool = alive_candidates(shard, int(w.ph_region[ph]))
        if n == 0 or len(pool) == 0:
            continue
        local = pool[rng.integers(0, len(pool), n)]
        fac = shard.home_fac[local]
        doc = doctor_in_facility(shard, rng, fac)
        day = shard.on_duty_day(doc, shard.fraud_days(rng, n, cfg.drift))
        ok = day >= 0
        days = np.full(ok.sum(), 7)
        daily = np.full(ok.sum(), w.drug_max_daily[drug])
        nos = pharmacy_sales(shard, rng, local[ok], doc[ok], day[ok], np.full(ok.sum(), ph),
                             np.full(ok.sum(), drug), daily, days)
        qty = float((daily * days).sum())
        month_day = w.month_start_day[w.month_of_day[day[ok]]]
        first = int(month_day.min()) if len(month_day) else 0
        purchases = [{"ph": int(ph), "item": int(cheap), "day": first, "quantity": float(np.ceil(qty)),
                      "supplier": int(w.supplier_of_pharmacy[ph])}]
        if cover > 0:
            purchases.append({"ph": int(ph), "item": int(drug), "day": first,
                              "quantity": float(np.floor(qty * cover)), "supplier": int(w.supplier_of_pharmacy[ph])})
        shard.extra_purchases.append(pl.DataFrame(purchases))
        all_nos.append(nos)
        state["hit"][i] |= len(nos) > 0
    if all_nos:
        shard.label(np.concatenate(all_nos), NAME)


def world_entities(world, cfg):
    state = world.extra.get(NAME)
    if not state or not state["hit"].any():
        return None
    ph = state["pharmacies"][state["hit"]]
    return pl.DataFrame({"entity_type": "pharmacy", "entity_id": world.pharmacy_ids.gather(ph),
                         "typology": NAME, "ring_id": pl.Series([None] * len(ph), dtype=pl.String)})
