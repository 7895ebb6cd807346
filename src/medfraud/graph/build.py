"""Build the heterogeneous claims graph from the contract tables.

Nodes are every patient, doctor, pharmacy and facility of the entity tables (sorted by id,
so indices are stable across windows).  Edges aggregate the claims and prescriptions of a
service-date window with lazy polars ``group_by``: ids are first mapped to node indices
(an Enum cast), so each relation groups one integer key ``src * n_dst + dst``, and the five
relations are collected in one ``collect_all`` that scans the tables once.  Only the
aggregated edge lists are materialised and converted to torch, which keeps memory flat for
millions of claims.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import torch
from torch_geometric.data import HeteroData

from medfraud.dataset import Dataset
from medfraud.features.frameset import FeatureSet
from medfraud.graph.core import EDGE_ATTRS, ClaimsGraph, EdgeType, add_relation

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


def _node_index(dataset: Dataset, node_type: str) -> pl.Series:
    """Sorted unique ids of a node type (String); position = node index."""
    table, id_col = NODE_TABLES[node_type]
    return dataset.scan(table).select(pl.col(id_col)).unique().sort(id_col).collect()[id_col]


def _code(column: str, ids: pl.Series) -> pl.Expr:
    """Node index (Int64) of each id in ``column``; null where the id is null or unknown.

    Casting to an Enum whose categories are the sorted ids maps every id to its position in
    one hash lookup, so the group-bys below run on integers instead of string pairs.
    """
    return pl.col(column).cast(pl.Enum(ids), strict=False).to_physical().cast(pl.Int64)


def _aggregate(frame: pl.LazyFrame, src: pl.Expr, dst: pl.Expr, n_dst: int, amount: str,
               day: str) -> pl.LazyFrame:
    """One row per (src, dst) pair, sorted by pair: key = src * n_dst + dst, count, amount
    (yuan), first and last day number; a null key marks rows whose ids are not nodes."""
    return (frame.group_by((src * n_dst + dst).alias("key"))
            .agg(pl.len().cast(pl.Float64).alias("count"),
                 pl.col(amount).sum().cast(pl.Float64).alias("amount"),
                 pl.col(day).min().cast(pl.Int32).cast(pl.Float64).alias("first_day"),
                 pl.col(day).max().cast(pl.Int32).cast(pl.Float64).alias("last_day"))
            .sort("key", nulls_last=True))


def _unknown_ids(frame: pl.LazyFrame, edge_type: EdgeType, ids: dict[str, pl.Series],
                 table: str) -> ValueError:
    """The error for ids of ``frame`` (the source and destination id columns of
    ``edge_type``) that are not nodes (only computed when some exist)."""
    for node_type in (edge_type[0], edge_type[2]):
        column = NODE_TABLES[node_type][1]
        bad = (frame.filter(_code(column, ids[node_type]).is_null())
               .select(pl.len(), pl.col(column).first()).collect())
        if bad[0, 0]:
            return ValueError(f"{table}.{column}: {bad[0, 0]} id(s) not in table "
                              f"{NODE_TABLES[node_type][0]}; example: {bad[0, 1]!r}")
    return ValueError(f"{table}: ids not in the entity tables")  # unreachable: a key was null


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
        attrs = store.edge_attr[:, :2].numpy()  # count, amount (bincount sums in float64)
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
    ids = {t: _node_index(dataset, t) for t in NODE_TABLES}
    n = {t: len(v) for t, v in ids.items()}
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
    filled = rx.filter(pl.col("filled_at").is_not_null())
    doctor, patient = _code("doctor_id", ids["doctor"]), _code("patient_id", ids["patient"])
    pharmacy, facility = _code("pharmacy_id", ids["pharmacy"]), _code("facility_id", ids["facility"])

    # edge type -> (aggregated pairs, source frame, table)
    edges = {
        ("doctor", "treats", "patient"): (
            _aggregate(claims, doctor, patient, n["patient"], "total_amount", "service_date"),
            claims, "claims"),
        ("doctor", "prescribes_to", "pharmacy"): (
            _aggregate(rx, doctor, pharmacy, n["pharmacy"], "total_amount", "issued_day"),
            rx, "prescriptions"),
        ("patient", "fills_at", "pharmacy"): (
            _aggregate(filled, patient, pharmacy, n["pharmacy"], "total_amount", "filled_day"),
            filled, "prescriptions"),
        ("patient", "visits", "facility"): (
            _aggregate(claims, patient, facility, n["facility"], "total_amount", "service_date"),
            claims, "claims"),
    }
    # works_at: the affiliation of the doctors table plus any facility a doctor billed at;
    # affiliations without claims in the window get count 0 and unknown days (-1).
    billed = _aggregate(claims, doctor, facility, n["facility"], "total_amount", "service_date")
    doctors = dataset.scan("doctors").select("doctor_id", "facility_id")
    home = doctors.select((doctor * n["facility"] + facility).alias("key")).unique()
    works = (billed.join(home, on="key", how="full", coalesce=True)
             .with_columns(pl.col("count", "amount").fill_null(0.0),
                           pl.col("first_day", "last_day").fill_null(-1.0))
             .sort("key", nulls_last=True))
    edges[("doctor", "works_at", "facility")] = (
        works, pl.concat([claims.select("doctor_id", "facility_id"), doctors]), "claims or doctors")

    # one query: the claims / prescriptions scans and the prescription-claim join are shared
    collected = pl.collect_all([edges[et][0] for et in RELATIONS])
    data = HeteroData()
    for edge_type, agg in zip(RELATIONS, collected):
        _, frame, table = edges[edge_type]
        if agg["key"].null_count():
            raise _unknown_ids(frame, edge_type, ids, table)
        key = agg["key"].to_numpy()
        n_dst = n[edge_type[2]]
        add_relation(data, edge_type, key // n_dst, key % n_dst, agg.select(EDGE_ATTRS).to_numpy())

    node_ids, names = {}, {}
    for node_type, (_, id_col) in NODE_TABLES.items():
        node_ids[node_type] = ids[node_type]
        n_t = n[node_type]
        frame = features.frames.get(node_type) if features is not None else None
        cols = features.columns.get(node_type, []) if features is not None else []
        if frame is not None and cols:
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise KeyError(f"features.frames[{node_type!r}] lacks feature column(s) {missing}")
            matrix = (pl.DataFrame({id_col: ids[node_type]})
                      .join(frame.select([id_col, *cols]), on=id_col, how="left",
                            maintain_order="left")
                      .select(cols).cast(pl.Float64).to_numpy())
            x, names[node_type] = _standardise(matrix), list(cols)
        else:
            x, names[node_type] = degree_features(data, node_type, n_t)
            x = _standardise(x)
        data[node_type].x = torch.from_numpy(x.astype(np.float32))
        data[node_type].num_nodes = n_t
    return ClaimsGraph(data=data, node_ids=node_ids, feature_names=names, window=window,
                       meta={"source": str(dataset.path)})
