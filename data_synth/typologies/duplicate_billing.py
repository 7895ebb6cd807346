"""duplicate_billing (重复收费): the same service line billed twice.

An exam or drug line of an honest claim is billed a second time as an identical line
(blatant).  Camouflaged cases fold the duplicate into the original line instead (quantity
doubled), which no longer shows two identical lines, only an unusual quantity.
"""

from __future__ import annotations

import numpy as np
import polars as pl


NAME = "duplicate_billing"
DEFAULT_PARAMS = {}


def inject(shard, cfg, rng) -> None:
    target = shard.target_count(cfg.prevalence)
    if target <= 0:
        return
    w, camo = shard.world, cfg.camouflage
    item_ok = np.zeros(len(w.item_price), bool)
    item_ok[: len(w.drug_price)] = True
    item_ok[w.exam_items] = True
    rows, nos = shard.first_lines(item_ok)
    if len(rows) == 0:
        return
    days = shard.claim_columns(nos, ["day"])["day"].to_numpy()
    chosen = shard.choose(rng, np.arange(len(rows)), target, shard.month_weight_of_days(days, cfg.drift))
    rows, nos = rows[chosen], nos[chosen]
    folded = rng.random(len(rows)) < camo
    copies = shard.lines[rows[~folded]]
    shard.set_line_values(rows[folded], quantity=shard.lines["quantity"].to_numpy()[rows[folded]] * 2)
    # A copied line lands after its claim's other lines (finalize sorts stably by claim).
    shard.lines = pl.concat([shard.lines, copies])
    shard.label(nos, NAME)


def world_entities(world, cfg):
    return None
