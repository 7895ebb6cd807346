"""collusion_ring (团伙欺诈): doctors, recruited patients and one pharmacy cycling prescriptions.

Each ring is a few doctors of one region (their duty roster is forced on the ring's
session days), one pharmacy of that region and, in every shard, a handful of recruited
patients.  On session days (every ``session_every`` days) ring patients see ring doctors
and the prescription for the ring's high-value drugs flows to the ring pharmacy: dense
bipartite blocks with synchronized timing.  Camouflage jitters session days, routes some
prescriptions to other pharmacies and mixes in cheaper drugs.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_synth.shard import pick_in_group
from data_synth.typologies._common import (
    alive_candidates, outpatient_visits, patient_id_series, pharmacy_sales, split_counts,
)

NAME = "collusion_ring"
DEFAULT_PARAMS = {"rings": 0, "ring_doctors": 4, "patients_per_ring": 8, "session_every": 7}


def plan(world, cfg, rng) -> None:
    p = cfg.params
    n_rings = int(p["rings"]) or max(2, round(world.n_doctors / 300))
    rings = []
    if cfg.prevalence <= 0:
        world.extra[NAME] = {"rings": rings, "hit": np.zeros(0, bool)}
        return
    used = np.zeros(world.n_doctors, bool)
    for r in range(n_rings):                                   # loop over rings
        region = int(rng.integers(0, len(world.region_codes)))
        fac_pool = np.flatnonzero(world.fac_region == region)
        docs = np.flatnonzero(np.isin(world.doc_fac, fac_pool) & ~used)
        if len(docs) < 2:
            docs = np.flatnonzero(~used)
        docs = rng.choice(docs, size=min(int(p["ring_doctors"]), len(docs)), replace=False)
        used[docs] = True
        region = int(world.fac_region[world.doc_fac[docs[0]]])
        ph_pool = np.flatnonzero(world.ph_region == region)
        pharmacy = int(rng.choice(ph_pool))
        every = max(1, int(p["session_every"]))
        sessions = np.arange(int(rng.integers(0, every)), world.n_days, every)
        world.duty[np.ix_(docs, sessions)] = True               # ring doctors work their sessions
        drugs = rng.choice(world.expensive_drugs, size=min(3, len(world.expensive_drugs)), replace=False)
        rings.append({"id": f"RING{r + 1:04d}", "region": region, "doctors": docs,
                      "pharmacy": pharmacy, "sessions": sessions, "drugs": drugs})
    # hit[r]: some shard gave ring r claims (only active rings' entities are labelled).
    world.extra[NAME] = {"rings": rings, "hit": np.zeros(len(rings), bool)}


def inject(shard, cfg, rng) -> None:
    state = shard.world.extra.get(NAME, {"rings": []})
    rings = state["rings"]
    target = shard.target_count(cfg.prevalence)
    if not rings or target < 2:
        return
    w, camo = shard.world, cfg.camouflage
    cycles = split_counts(target // 2, len(rings))
    # Per ring: recruit patients and draw the sessions; the claims of all rings are then
    # built in one batch (one polars frame per table instead of two per ring).
    parts = []
    for r, (ring, n_cycles) in enumerate(zip(rings, cycles)):   # loop over rings
        if n_cycles == 0:
            continue
        pool = alive_candidates(shard, ring["region"])
        if len(pool) < 2:
            pool = alive_candidates(shard)
        members = shard.choose(rng, pool, int(cfg.params["patients_per_ring"]))
        if len(members) == 0:
            continue
        shard.taken[members] = True
        sess_w = shard.month_weight_of_days(ring["sessions"], cfg.drift)
        day = rng.choice(ring["sessions"], size=n_cycles, p=sess_w / sess_w.sum())
        local = members[rng.integers(0, len(members), n_cycles)]
        doc = ring["doctors"][rng.integers(0, len(ring["doctors"]), n_cycles)]
        jitter = (rng.random(n_cycles) < camo) * rng.integers(0, 1 + int(6 * camo), n_cycles)
        day = shard.on_duty_day(doc, day + jitter)
        ok = day >= 0
        parts.append((np.full(ok.sum(), r), local[ok], doc[ok], day[ok]))
        state["hit"][r] = True
    if not parts:
        return
    ring_of, local, doc, day = (np.concatenate(a) for a in zip(*parts))
    n = len(local)
    visit = outpatient_visits(shard, rng, local, doc, w.doc_fac[doc], day)
    ring_pharmacy = np.array([ring["pharmacy"] for ring in rings])
    ring_drugs = np.stack([ring["drugs"] for ring in rings])            # (rings, drugs per ring)
    ph = ring_pharmacy[ring_of]
    elsewhere = rng.random(n) < 0.5 * camo
    ph = np.where(elsewhere, pick_in_group(rng, shard.region[local], w.ph_region_start,
                                           w.ph_region_count), ph)
    cheap = rng.random(n) < camo * 0.6
    drug = np.where(cheap, w.safe_drugs[rng.integers(0, len(w.safe_drugs), n)],
                    ring_drugs[ring_of, rng.integers(0, ring_drugs.shape[1], n)])
    days = np.full(n, 7)
    daily = np.where(cheap, np.maximum(0.5, w.drug_max_daily[drug] / 2), w.drug_max_daily[drug])
    sale = pharmacy_sales(shard, rng, local, doc, day, ph, drug, daily, days)
    ring_ids = np.array([ring["id"] for ring in rings])
    shard.label(np.concatenate([visit, sale]), NAME, np.concatenate([ring_ids[ring_of], ring_ids[ring_of]]))
    pairs = np.unique(np.stack([ring_of, local]), axis=1)               # (2, distinct ring patients)
    shard.label_entities("patient", patient_id_series(shard, pairs[1]), NAME, ring_ids[pairs[0]])


def world_entities(world, cfg) -> pl.DataFrame | None:
    rows = []
    state = world.extra.get(NAME, {"rings": [], "hit": []})
    for ring, hit in zip(state["rings"], state["hit"], strict=True):
        if not hit:
            continue
        rows.append(pl.DataFrame({"entity_type": "doctor", "entity_id": world.doctor_ids.gather(ring["doctors"]),
                                  "typology": NAME, "ring_id": ring["id"]}))
        rows.append(pl.DataFrame({"entity_type": ["pharmacy"],
                                  "entity_id": [world.pharmacy_ids[ring["pharmacy"]]],
                                  "typology": [NAME], "ring_id": [ring["id"]]}))
    return pl.concat(rows) if rows else None
