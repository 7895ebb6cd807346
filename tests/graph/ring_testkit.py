"""A hand-built claims graph with an honest dense core and one planted collusion ring."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch_geometric.data import HeteroData

from medfraud.graph.core import ClaimsGraph, add_relation


def _edges(src: np.ndarray, dst: np.ndarray, amount: np.ndarray) -> tuple[np.ndarray, ...]:
    """Aggregate claim-level (src, dst, amount) into one edge per pair: count, amount."""
    pairs, inverse = np.unique(np.stack([src, dst]), axis=1, return_inverse=True)
    inverse = inverse.ravel()
    count = np.bincount(inverse, minlength=pairs.shape[1]).astype(float)
    total = np.bincount(inverse, weights=amount, minlength=pairs.shape[1])
    days = np.full(pairs.shape[1], -1.0)
    return pairs[0], pairs[1], np.column_stack([count, total, days, days])


def honest_core_with_ring(seed: int = 0, one_off: bool = False) -> tuple[ClaimsGraph, set[str]]:
    """3 facilities x 10 doctors, 908 patients, 12 pharmacies, and one ring among them.

    Honest: every patient has 2-10 visits to doctors of his home facility (lognormal
    amounts around 150 yuan, fills at his home pharmacy); a fifth are chronic patients with
    12 refills from one regular doctor.  Under plain counts the facilities are the densest
    blocks.  Ring: 4 doctors of two facilities and 8 recruited patients (who keep their
    honest visits too) see every ring doctor three times with expensive drugs (around
    3,000 yuan) filled at one pharmacy.  ``one_off`` adds what the money evidence also
    lights up but is not a ring: pharmacy 9 bills one 50,000-yuan sale to each of patients
    0-5, prescribed by doctor 20 or 25 (one doctor per patient).

    Returns
    -------
    (graph, ring member ids: 4 doctors, 8 patients, 1 pharmacy).
    """
    rng = np.random.default_rng(seed)
    n_pat, n_doc, n_ph, n_fac = 908, 30, 12, 3
    home = rng.integers(0, n_fac, n_pat)
    home_ph = rng.integers(0, n_ph, n_pat)
    # honest visits (vectorised: one row per claim)
    visits = rng.integers(2, 11, n_pat)
    pat = np.repeat(np.arange(n_pat), visits)
    doc = home[pat] * 10 + rng.integers(0, 10, len(pat))
    amount = rng.lognormal(np.log(150.0), 0.6, len(pat))
    chronic = np.flatnonzero(rng.random(n_pat) < 0.2)
    c_pat = np.repeat(chronic, 12)
    c_doc = np.repeat(home[chronic] * 10 + rng.integers(0, 10, len(chronic)), 12)
    c_amount = rng.lognormal(np.log(200.0), 0.3, len(c_pat))
    # the ring: the last 8 patients, doctors 3, 7 (facility 0) and 14, 18 (facility 1)
    ring_pat = np.arange(n_pat - 8, n_pat)
    ring_doc = np.array([3, 7, 14, 18])
    r_pat = np.repeat(ring_pat, len(ring_doc) * 3)
    r_doc = np.tile(np.repeat(ring_doc, 3), len(ring_pat))
    r_amount = rng.lognormal(np.log(3000.0), 0.3, len(r_pat))
    ring_ph = 5

    o_pat = np.arange(6) if one_off else np.zeros(0, dtype=np.int64)
    o_doc = np.where(o_pat % 2 == 0, 20, 25)
    o_amount = np.full(len(o_pat), 50_000.0)

    t_doc = np.concatenate([doc, c_doc, r_doc, o_doc])
    t_pat = np.concatenate([pat, c_pat, r_pat, o_pat])
    t_amount = np.concatenate([amount, c_amount, r_amount, o_amount])
    f_ph = np.concatenate([home_ph[pat], home_ph[c_pat], np.full(len(r_pat), ring_ph),
                           np.full(len(o_pat), 9)])

    data = HeteroData()
    add_relation(data, ("doctor", "treats", "patient"), *_edges(t_doc, t_pat, t_amount))
    add_relation(data, ("patient", "fills_at", "pharmacy"), *_edges(t_pat, f_ph, t_amount))
    add_relation(data, ("doctor", "prescribes_to", "pharmacy"), *_edges(t_doc, f_ph, t_amount))
    add_relation(data, ("doctor", "works_at", "facility"),
                 *_edges(np.arange(n_doc), np.arange(n_doc) // 10, np.zeros(n_doc)))
    ids = {"patient": [f"P{i:05d}" for i in range(n_pat)],
           "doctor": [f"D{i:03d}" for i in range(n_doc)],
           "pharmacy": [f"R{i:03d}" for i in range(n_ph)],
           "facility": [f"F{i}" for i in range(n_fac)]}
    for node_type, names in ids.items():
        data[node_type].x = torch.zeros((len(names), 1))
        data[node_type].num_nodes = len(names)
    graph = ClaimsGraph(data=data, node_ids={t: pl.Series(t, v) for t, v in ids.items()},
                        feature_names={t: ["bias"] for t in ids})
    ring = ({ids["patient"][i] for i in ring_pat} | {ids["doctor"][i] for i in ring_doc}
            | {ids["pharmacy"][ring_ph]})
    return graph, ring
