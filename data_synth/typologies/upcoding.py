"""upcoding (高套分值 / 高套DRG): DRG groups heavier than the diagnosis supports.

A share ``facility_share`` of level-2/3 hospitals upcode.  Their honest stays are
regrouped, more often in later months when ``drift`` > 0 (the facility's case mix drifts
upward).  Blatant upcoding moves the case to a heavier group of another ADRG, which the
diagnosis does not map to; camouflaged upcoding only claims the "with complication"
variant of the right ADRG, which is legitimate for some honest cases too, so only the
facility's case-mix index betrays it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

NAME = "upcoding"
DEFAULT_PARAMS = {"facility_share": 0.2}


def plan(world, cfg, rng) -> None:
    pool = world.inpatient_fac
    n = max(1, round(cfg.params["facility_share"] * len(pool)))
    world.extra[NAME] = {"facilities": rng.choice(pool, size=min(n, len(pool)), replace=False),
                         "hit": np.zeros(world.n_facilities, bool)}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo, state = shard.world, cfg.camouflage, shard.world.extra[NAME]
    claims = shard.claims.with_row_index("row")
    honest = pl.Series(shard.honest_mask())
    stays = claims.filter(honest & (pl.col("setting") == "inpatient")
                          & pl.col("fac").is_in(pl.Series(state["facilities"]).implode()))
    if stays.height == 0:
        return
    weight = shard.month_weight_of_days(stays["day"].to_numpy(), cfg.drift)
    pick = stays[shard.choose(rng, np.arange(stays.height), target, weight)]
    n = pick.height
    base = w.diag_drg[pick["diag"].to_numpy()]
    cur_w = w.drg_weight[pick["drg"].to_numpy()]
    heaviest = np.argsort(w.drg_weight)[-max(3, len(w.drg_weight) // 5):]
    idx = rng.integers(0, len(heaviest), n)
    other = heaviest[idx]
    # Blatant: another ADRG's heavy group (never the diagnosis' own ADRG).
    other = np.where((other // 2) == (base // 2), heaviest[(idx + 1) % len(heaviest)], other)
    blatant = ((rng.random(n) >= camo) & (w.drg_weight[other] > cur_w)
               & ((other // 2) != (base // 2)))
    new_drg = np.where(blatant, other, base + 1)
    changed = new_drg != pick["drg"].to_numpy()
    patch = pl.DataFrame({"row": pick["row"].filter(pl.Series(changed)),
                          "drg_new": new_drg[changed].astype(np.int32)})
    shard.claims = claims.join(patch, on="row", how="left").with_columns(
        pl.coalesce("drg_new", "drg").alias("drg")).drop("row", "drg_new")
    nos = pick["claim_no"].to_numpy()[changed]
    shard.label(nos, NAME)
    state["hit"][np.unique(pick["fac"].to_numpy()[changed])] = True


def world_entities(world, cfg):
    state = world.extra.get(NAME)
    if not state or not state["hit"].any():
        return None
    fac = np.flatnonzero(state["hit"])
    return pl.DataFrame({"entity_type": "facility", "entity_id": world.facility_ids.gather(fac),
                         "typology": NAME, "ring_id": pl.Series([None] * len(fac), dtype=pl.String)})
