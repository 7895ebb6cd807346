"""Build the heterogeneous claims graph from the contract tables.

Nodes are every patient, doctor, pharmacy and facility of the entity tables (sorted by id,
so indices are stable across windows).  Edges aggregate the claims and prescriptions of a
service-date window with lazy polars ``group_by``; only the aggregated edge list is
collected and converted to torch, once, which keeps memory flat for millions of claims.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import torch
from torch_geometric.data import HeteroData

from medfraud.dataset import Dataset
from medfraud.features.frameset import FeatureSet
from medfraud.graph.core import EDGE_ATTRS, ClaimsGraph, add_relation

# node type -> (entity table, id column)
NODE_TABLES = {
    "patient": ("patients", "patient_id"),
    "doctor": ("doctors", "doctor_id"),
    "pharmacy": ("pharmacies", "pharmacy_id"),
    "facility": ("facilities", "facility_id"),
}

RELATIONS = (
    ("doctor", "treats", "patient"),
    ("doctor", "prescribes_to", "pharmacy"),
    ("patient", "fills_at", "pharmacy"),
    ("doctor", "works_at", "facility"),
    ("patient", "visits", "facility"),
)


def _node_index(dataset: Dataset, node_type: str) -> pl.DataFrame:
    table, id_col = NODE_TABLES[node_type]
    ids = dataset.scan(table).select(pl.col(id_col)).unique().sort(id_col).collect()
    return ids.with_row_index(f"{node_type}_idx").with_columns(pl.col(f"{node_type}_idx").cast(pl.Int64))


def _aggregate(frame: pl.LazyFrame, src: str, dst: str, amount: str, day: str) -> pl.LazyFrame:
    """One row per (src, dst) pair: count, amount (yuan), first and last day number."""
    return frame.group_by([src, dst]).agg(
        pl.len().cast(pl.Float64).alias("count"),
        pl.col(amount).sum().cast(pl.Float64).alias("amount"),
        pl.col(day).min().cast(pl.Int32).cast(pl.Float64).alias("first_day"),
        pl.col(day).max().cast(pl.Int32).cast(pl.Float64).alias("last_day"),
    )


def _to_edges(agg: pl.LazyFrame, src_type: str, dst_type: str, src_col: str, dst_col: str,
              index: dict[str, pl.DataFrame], table: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s_idx, d_idx = f"{src_type}_idx", f"{dst_type}_idx"
    joined = (agg.join(index[src_type].lazy().rename({NODE_TABLES[src_type][1]: src_col}),
                       on=src_col, how="left")
              .join(index[dst_type].lazy().rename({NODE_TABLES[dst_type][1]: dst_col}),
                    on=dst_col, how="left")
              .collect())
    for idx_col, id_col, node_type in ((s_idx, src_col, src_type), (d_idx, dst_col, dst_type)):
        unknown = joined.filter(pl.col(idx_col).is_null())
        if unknown.height:
            raise ValueError(f"{table}.{id_col}: {unknown.height} id(s) not in table "
                             f"{NODE_TABLES[node_type][0]}; example: {unknown[id_col][0]!r}")
    joined = joined.sort([s_idx, d_idx])
    attrs = joined.select(EDGE_ATTRS).to_numpy()
    return joined[s_idx].to_numpy(), joined[d_idx].to_numpy(), attrs


def _standardise(matrix: np.ndarray) -> np.ndarray:
    matrix = matrix.astype(np.float64, copy=True)
    with np.errstate(all="ignore"):
        mean = np.nanmean(matrix, axis=0)
        std = np.nanstd(matrix, axis=0)
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    out = (matrix - mean) / std
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def degree_features(data: HeteroData, node_type: str, n: int) -> tuple[np.ndarray, list[str]]:
    """Default node features: log1p of claim count and amount per incident relation.

    Returns (float64 (n, 2k), names) for the k relations leaving ``node_type``
    (reverse relations included, so every incident relation counts once).
    """
    columns, names = [], []
    for s, r, d in data.edge_types:
        if s != node_type:
            continue
        store = data[s, r, d]
        src = store.edge_index[0].numpy()
        attrs = store.edge_attr.double().numpy()
        columns.append(np.log1p(np.bincount(src, weights=attrs[:, 0], minlength=n)))
        columns.append(np.log1p(np.bincount(src, weights=np.clip(attrs[:, 1], 0, None), minlength=n)))
        names += [f"log_count_{r}", f"log_amount_{r}"]
    if not columns:
        return np.zeros((n, 1)), ["bias"]
    return np.column_stack(columns), names


def build_claims_graph(dataset: Dataset, features: FeatureSet | None = None,
                       window: tuple[date, date] | None = None) -> ClaimsGraph:
    """Build the patient–doctor–pharmacy–facility graph of a dataset.

    Parameters
    ----------
    dataset : an opened dataset (claims, prescriptions and the entity tables are read).
    features : when it has a frame for a node type's level, that frame's ``columns[level]``
        become the node features (standardised, NaN -> 0; entities absent from the frame get
        0); other node types get :func:`degree_features`.
    window : (first, last) service date, inclusive; None keeps every claim. Prescriptions
        are kept when their ``issued_at`` date is in the window.

    Returns
    -------
    ClaimsGraph with relations :data:`RELATIONS` and their ``rev_`` reverses; edge
    attributes are count, amount (sum of claim ``total_amount``, yuan), first/last day.
    """
    index = {t: _node_index(dataset, t) for t in NODE_TABLES}
    claims = dataset.scan("claims").select(
        "claim_id", "patient_id", "doctor_id", "facility_id", "service_date", "total_amount")
    rx = dataset.scan("prescriptions").select(
        "claim_id", "doctor_id", "patient_id", "pharmacy_id", "issued_at", "filled_at")
    if window is not None:
        first, last = window
        claims = claims.filter(pl.col("service_date").is_between(first, last))
        rx = rx.filter(pl.col("issued_at").dt.date().is_between(first, last))
    rx = rx.join(claims.select("claim_id", "total_amount"), on="claim_id", how="left").with_columns(
        pl.col("total_amount").fill_null(0.0),
        pl.col("issued_at").dt.date().alias("issued_day"),
        pl.col("filled_at").dt.date().alias("filled_day"))

    data = HeteroData()
    edges = {
        ("doctor", "treats", "patient"): (
            _aggregate(claims, "doctor_id", "patient_id", "total_amount", "service_date"),
            "doctor_id", "patient_id", "claims"),
        ("doctor", "prescribes_to", "pharmacy"): (
            _aggregate(rx, "doctor_id", "pharmacy_id", "total_amount", "issued_day"),
            "doctor_id", "pharmacy_id", "prescriptions"),
        ("patient", "fills_at", "pharmacy"): (
            _aggregate(rx.filter(pl.col("filled_at").is_not_null()), "patient_id", "pharmacy_id",
                       "total_amount", "filled_day"),
            "patient_id", "pharmacy_id", "prescriptions"),
        ("patient", "visits", "facility"): (
            _aggregate(claims, "patient_id", "facility_id", "total_amount", "service_date"),
            "patient_id", "facility_id", "claims"),
    }
    # works_at: the affiliation of the doctors table plus any facility a doctor billed at;
    # affiliations without claims in the window get count 0 and unknown days (-1).
    billed = _aggregate(claims, "doctor_id", "facility_id", "total_amount", "service_date")
    home = dataset.scan("doctors").select("doctor_id", "facility_id")
    works = (billed.join(home, on=["doctor_id", "facility_id"], how="full", coalesce=True)
             .with_columns(pl.col("count", "amount").fill_null(0.0),
                           pl.col("first_day", "last_day").fill_null(-1.0)))
    edges[("doctor", "works_at", "facility")] = (works, "doctor_id", "facility_id", "claims")

    for edge_type in RELATIONS:
        agg, src_col, dst_col, table = edges[edge_type]
        src, dst, attrs = _to_edges(agg, edge_type[0], edge_type[2], src_col, dst_col, index, table)
        add_relation(data, edge_type, src, dst, attrs)

    node_ids, names = {}, {}
    for node_type, (_, id_col) in NODE_TABLES.items():
        ids = index[node_type][id_col]
        node_ids[node_type] = ids
        n = len(ids)
        frame = features.frames.get(node_type) if features is not None else None
        cols = features.columns.get(node_type, []) if features is not None else []
        if frame is not None and cols:
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise KeyError(f"features.frames[{node_type!r}] lacks feature column(s) {missing}")
            matrix = (pl.DataFrame({id_col: ids})
                      .join(frame.select([id_col, *cols]), on=id_col, how="left",
                            maintain_order="left")
                      .select(cols).cast(pl.Float64).to_numpy())
            x, names[node_type] = _standardise(matrix), list(cols)
        else:
            x, names[node_type] = degree_features(data, node_type, n)
            x = _standardise(x)
        data[node_type].x = torch.from_numpy(x.astype(np.float32))
        data[node_type].num_nodes = n
    return ClaimsGraph(data=data, node_ids=node_ids, feature_names=names, window=window,
                       meta={"source": str(dataset.path)})
