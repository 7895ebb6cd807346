"""over_prescription (超量开药 / 重复开药 / 不合理用药): doses, durations and drugs beyond the label.

Honest drug lines are altered (and their claims labelled) in four ways, picked per case:

* ``dose``: quantity above ``max_daily_units × days_supply`` (factor shrinks with camouflage);
* ``duration``: days_supply over the limit (7 days ordinary, 84 chronic), just over it when
  camouflaged;
* ``off_label``: the drug is replaced by one restricted to the other sex or another age band;
* ``early_refill``: a second sale of the same drug to the same patient while the first
  supply still lasts.

A share ``doctor_share`` of doctors write ``doctor_focus`` of the cases, which makes them
prescribe far above their peers; they are labelled as doctor entities.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.typologies._common import pharmacy_sales

NAME = "over_prescription"
DEFAULT_PARAMS = {"doctor_share": 0.03, "doctor_focus": 0.6, "dose_share": 0.4, "duration_share": 0.25,
                  "off_label_share": 0.15}


def plan(world, cfg, rng) -> None:
    n = max(1, round(cfg.params["doctor_share"] * world.n_doctors))
    world.extra[NAME] = {"doctors": rng.choice(world.n_doctors, size=n, replace=False),
                         "hit": np.zeros(world.n_doctors, bool)}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo, p, state = shard.world, cfg.camouflage, cfg.params, shard.world.extra[NAME]
    item_ok = np.zeros(len(w.item_price), bool)
    item_ok[: len(w.drug_price)] = True
    rows, nos = shard.first_lines(item_ok)
    first_drug = shard.claim_columns(nos, ["pat", "doc", "day", "ph", "setting"]).with_columns(
        pl.Series("row", rows))
    first_drug = first_drug.filter(pl.col("setting").is_in(["outpatient", "pharmacy"]))
    if first_drug.height == 0:
        return
    line_cols = shard.lines[first_drug["row"].to_numpy()].select("item", "quantity", "days_supply")
    first_drug = pl.concat([first_drug, line_cols], how="horizontal")
    doc = first_drug["doc"].to_numpy()
    focus = np.isin(doc, state["doctors"])
    n_focus = max(focus.sum(), 1)
    weight = np.where(focus, p["doctor_focus"] / n_focus, (1 - p["doctor_focus"]) / max((~focus).sum(), 1))
    weight = weight * shard.month_weight_of_days(first_drug["day"].to_numpy(), cfg.drift)
    chosen = shard.choose(rng, np.arange(first_drug.height), target, weight)
    pick = first_drug[chosen]
    n = pick.height
    variant = rng.choice(4, size=n, p=_variant_p(p))
    item = pick["item"].to_numpy()
    days = pick["days_supply"].to_numpy()
    qty = pick["quantity"].to_numpy()
    max_daily = w.drug_max_daily[item]
    # dose: factor between 1.1 (camouflaged) and 1 + 3 × intensity (blatant)
    factor = 1.1 + (1 - camo) * 2.0 * cfg.intensity * rng.uniform(0.5, 1.0, n)
    dose_qty = np.ceil(max_daily * days * factor)
    # duration: over 7 (ordinary) or 84 (chronic) days
    limit = np.where(days > 7, 84, 7)
    over = 1 + np.floor(rng.uniform(0, 1, n) * (1 + (1 - camo) * 20 * cfg.intensity)).astype(int)
    new_days = limit + over
    dur_qty = qty / np.maximum(days, 1) * new_days
    # off-label: a drug the patient may not receive (sex or age)
    local = shard.local_of(pick["pat"].to_numpy())
    off = _off_label_drug(shard, rng, local, pick["day"].to_numpy())
    has_off = off >= 0
    variant = np.where((variant == 2) & ~has_off, 0, variant)
    new_item = np.where(variant == 2, off, item)
    new_qty = np.select([variant == 0, variant == 1], [dose_qty, dur_qty], qty)
    new_days = np.where(variant == 1, new_days, days)
    new_price = w.item_price[new_item]
    shard.set_line_values(pick["row"].to_numpy(), item=new_item, quantity=new_qty, days_supply=new_days,
                          unit_price=new_price)
    labelled = pick["claim_no"].to_numpy()[variant != 3]
    # early refill: same drug again after a third of the supply, at the same pharmacy or the usual one
    refill = variant == 3
    if refill.any():
        r_local = local[refill]
        r_day = pick["day"].to_numpy()[refill] + np.maximum(1, days[refill] // 3)
        ok = (r_day < w.n_days) & (r_day < shard.death_day[r_local])
        r_doc = pick["doc"].to_numpy()[refill][ok]
        r_day = shard.on_duty_day(r_doc, r_day[ok])
        first_end = pick["day"].to_numpy()[refill][ok] + days[refill][ok]
        ok2 = (r_day > pick["day"].to_numpy()[refill][ok]) & (r_day < first_end) & \
            (r_day < shard.death_day[r_local[ok]])
        ph = pick["ph"].to_numpy()[refill][ok]
        ph = np.where(ph >= 0, ph, shard.home_ph[r_local[ok]])
        nos = pharmacy_sales(shard, rng, r_local[ok][ok2], r_doc[ok2], r_day[ok2], ph[ok2],
                             item[refill][ok][ok2], qty[refill][ok][ok2] / np.maximum(days[refill][ok][ok2], 1),
                             days[refill][ok][ok2])
        labelled = np.concatenate([labelled, pick["claim_no"].to_numpy()[refill][ok][ok2], nos])
    shard.label(labelled, NAME)
    hit_docs = np.unique(shard.claims.filter(pl.col("claim_no").is_in(pl.Series(labelled).implode()))["doc"])
    state["hit"][hit_docs[np.isin(hit_docs, state["doctors"])]] = True


def _variant_p(p) -> np.ndarray:
    shares = np.array([p["dose_share"], p["duration_share"], p["off_label_share"],
                       max(0.0, 1 - p["dose_share"] - p["duration_share"] - p["off_label_share"])])
    return shares / shares.sum()


def _off_label_drug(shard, rng, local: np.ndarray, day: np.ndarray) -> np.ndarray:
    """A drug restricted against each patient's sex or age, -1 when none exists."""
    w = shard.world
    sex = shard.sex[local]
    age = shard.age_at(local, day)
    for_men = np.flatnonzero(w.drug_sex == 1)
    for_women = np.flatnonzero(w.drug_sex == 2)
    adults = np.flatnonzero(w.drug_min_age >= 18)
    children = np.flatnonzero((w.drug_max_age >= 0) & (w.drug_max_age <= 12))
    out = np.full(len(local), -1)

    def pick(pool, mask):
        if len(pool):
            out[mask] = pool[rng.integers(0, len(pool), mask.sum())]

    pick(children, (out < 0) & (age > 14) & (rng.random(len(local)) < 0.5))
    pick(for_women, (out < 0) & (sex == 0))
    pick(for_men, (out < 0) & (sex == 1))
    pick(adults, (out < 0) & (age < 16))
    return out


def world_entities(world, cfg):
    state = world.extra.get(NAME)
    if not state:
        return None
    docs = state["doctors"][state["hit"][state["doctors"]]]
    if len(docs) == 0:
        return None
    return pl.DataFrame({"entity_type": "doctor", "entity_id": world.doctor_ids.gather(docs),
                         "typology": NAME, "ring_id": pl.Series([None] * len(docs), dtype=pl.String)})
