"""A generic graph folder format, so graph detectors also run on non-claims graphs.

Format (see docs/graph.md): a folder with

* ``nodes.parquet``: ``node_id`` (String, unique), ``node_type`` (String), any number of
  numeric feature columns named ``f_*``, optional ``label`` (Int8: 1 fraud, 0 normal,
  null unknown) and optional ``ring_id`` (String, null outside planted rings);
* ``edges.parquet``: ``src`` and ``dst`` (String, both in ``nodes.node_id``), ``relation``
  (String) and optional ``amount`` (Float64).

Edges are grouped by (type of src, relation, type of dst); duplicate rows become the
``count`` edge attribute.  :func:`make_fraudar_benchmark` writes the classic FRAUDAR
injection (Hooi et al. 2016) in this format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch_geometric.data import HeteroData

from medfraud.graph.build import _standardise, degree_features
from medfraud.graph.core import ClaimsGraph, add_relation

NODES_FILE = "nodes.parquet"
EDGES_FILE = "edges.parquet"


class GraphFormatError(ValueError):
    """A generic graph folder breaks the format; the message names file, column, count, example."""


def _example(frame: pl.DataFrame) -> str:
    return json.dumps(frame.head(1).row(0, named=True), default=str)


def _check_columns(frame: pl.DataFrame, file: str, required: dict[str, tuple[type, ...]]) -> None:
    for column, dtypes in required.items():
        if column not in frame.columns:
            raise GraphFormatError(f"{file}: missing column {column!r} (have {frame.columns})")
        if not isinstance(frame.schema[column], dtypes):
            raise GraphFormatError(f"{file}.{column}: wrong dtype {frame.schema[column]}, expected "
                                   f"{' or '.join(d.__name__ for d in dtypes)}")
        nulls = frame.filter(pl.col(column).is_null())
        if nulls.height:
            raise GraphFormatError(f"{file}.{column}: {nulls.height} null value(s); example: "
                                   f"{_example(nulls)}")


def load_generic_graph(path: str | Path, degree_feats: bool = True) -> ClaimsGraph:
    """Load a generic graph folder as a :class:`ClaimsGraph`.

    Parameters
    ----------
    path : folder holding ``nodes.parquet`` and ``edges.parquet``.
    degree_feats : append log1p(count) per incident relation to the ``f_*`` features (the
        only features when there are no ``f_*`` columns).

    Returns
    -------
    ClaimsGraph whose node types are the distinct ``node_type`` values (ids sorted),
    ``labels[t]`` the ``label`` column when present and ``meta["rings"]`` a dict
    ring_id -> set of node ids when ``ring_id`` is present.

    Raises
    ------
    GraphFormatError naming file, column, bad-row count and an example row.
    """
    path = Path(path)
    for name in (NODES_FILE, EDGES_FILE):
        if not (path / name).is_file():
            raise GraphFormatError(f"{path}: {name} is missing")
    nodes = pl.read_parquet(path / NODES_FILE)
    edges = pl.read_parquet(path / EDGES_FILE)
    _check_columns(nodes, NODES_FILE, {"node_id": (pl.String,), "node_type": (pl.String,)})
    _check_columns(edges, EDGES_FILE, {"src": (pl.String,), "dst": (pl.String,),
                                       "relation": (pl.String,)})
    feature_cols = [c for c in nodes.columns if c.startswith("f_")]
    for c in feature_cols:
        if not nodes.schema[c].is_numeric():
            raise GraphFormatError(f"{NODES_FILE}.{c}: feature columns must be numeric, got "
                                   f"{nodes.schema[c]}")
    dups = nodes.filter(pl.col("node_id").is_duplicated())
    if dups.height:
        raise GraphFormatError(f"{NODES_FILE}.node_id: {dups.height} row(s) with a duplicate "
                               f"node_id; example: {_example(dups)}")
    if "label" in nodes.columns:
        if not nodes.schema["label"].is_integer():
            raise GraphFormatError(f"{NODES_FILE}.label: wrong dtype {nodes.schema['label']}, "
                                   "expected Int8 (1 fraud, 0 normal, null unknown)")
        bad = nodes.filter(~pl.col("label").is_in([0, 1]) & pl.col("label").is_not_null())
        if bad.height:
            raise GraphFormatError(f"{NODES_FILE}.label: {bad.height} value(s) not 0/1/null; "
                                   f"example: {_example(bad)}")
    if "amount" in edges.columns and not edges.schema["amount"].is_numeric():
        raise GraphFormatError(f"{EDGES_FILE}.amount: wrong dtype {edges.schema['amount']}, "
                               "expected Float64")

    nodes = nodes.sort(["node_type", "node_id"])
    node_ids, index_frames = {}, []
    for node_type in nodes["node_type"].unique().sort().to_list():
        ids = nodes.filter(pl.col("node_type") == node_type)["node_id"]
        node_ids[node_type] = ids
        index_frames.append(pl.DataFrame({"node_id": ids, "node_type": node_type})
                            .with_row_index("idx").with_columns(pl.col("idx").cast(pl.Int64)))
    lookup = pl.concat(index_frames)
    amount = pl.col("amount").cast(pl.Float64) if "amount" in edges.columns else pl.lit(0.0)
    typed = (edges.with_columns(amount.alias("amount"))
             .join(lookup.rename({"node_id": "src", "node_type": "src_type", "idx": "s"}),
                   on="src", how="left")
             .join(lookup.rename({"node_id": "dst", "node_type": "dst_type", "idx": "d"}),
                   on="dst", how="left"))
    for end in ("src", "dst"):
        unknown = typed.filter(pl.col("s" if end == "src" else "d").is_null())
        if unknown.height:
            raise GraphFormatError(f"{EDGES_FILE}.{end}: {unknown.height} edge(s) point to a node "
                                   f"absent from {NODES_FILE}; example: "
                                   f"{_example(unknown.select('src', 'dst', 'relation'))}")
    grouped = (typed.group_by(["src_type", "relation", "dst_type", "s", "d"])
               .agg(pl.len().cast(pl.Float64).alias("count"), pl.col("amount").sum())
               .sort(["src_type", "relation", "dst_type", "s", "d"]))

    data = HeteroData()
    for (s_type, rel, d_type), part in grouped.group_by(
            ["src_type", "relation", "dst_type"], maintain_order=True):
        attrs = np.column_stack([part["count"].to_numpy(), part["amount"].to_numpy(),
                                 np.full(part.height, -1.0), np.full(part.height, -1.0)])
        add_relation(data, (s_type, rel, d_type), part["s"].to_numpy(), part["d"].to_numpy(), attrs)

    names, labels = {}, {}
    for node_type, ids in node_ids.items():
        part = nodes.filter(pl.col("node_type") == node_type)
        blocks, cols = [], []
        if feature_cols:
            blocks.append(part.select(feature_cols).cast(pl.Float64).to_numpy())
            cols += feature_cols
        if degree_feats or not feature_cols:
            deg, deg_names = degree_features(data, node_type, len(ids))
            blocks.append(deg[:, 0::2] if deg.shape[1] > 1 else deg)
            cols += deg_names[0::2] if deg.shape[1] > 1 else deg_names
        data[node_type].x = torch.from_numpy(_standardise(np.column_stack(blocks)).astype(np.float32))
        data[node_type].num_nodes = len(ids)
        names[node_type] = cols
        if "label" in part.columns:
            labels[node_type] = part["label"].cast(pl.Int8)
    meta: dict = {"source": str(path)}
    if "ring_id" in nodes.columns:
        rings = nodes.filter(pl.col("ring_id").is_not_null()).group_by("ring_id").agg("node_id")
        meta["rings"] = {r: set(m) for r, m in rings.iter_rows()}
    return ClaimsGraph(data=data, node_ids=node_ids, feature_names=names, labels=labels, meta=meta)


def _ids(prefix: str, n: int, width: int) -> pl.Series:
    return pl.select(pl.lit(prefix) + pl.int_range(n, eager=False).cast(pl.String)
                     .str.zfill(width)).to_series().rename("node_id")


def make_fraudar_benchmark(n_users: int, n_items: int, block: tuple[int, int] = (50, 50),
                           n_blocks: int = 1, camouflage_ratio: float = 1.0, seed: int = 0,
                           out: str | Path | None = None, honest_degree: float = 5.0,
                           block_density: float = 0.5, n_features: int = 4,
                           camouflage: str = "random") -> Path:
    """Write a FRAUDAR-style benchmark (random bipartite graph + dense fraud blocks).

    Honest users review ``honest_degree`` items on average, items drawn with a skewed
    (power-law-like) popularity.  Each of ``n_blocks`` fraud blocks is a disjoint set of
    ``block[0]`` users and ``block[1]`` items linked with probability ``block_density``.
    Camouflage: every fraud user also reviews ``camouflage_ratio`` times as many honest
    items as it has fraud edges, drawn uniformly (``camouflage="random"``) or in proportion
    to item popularity (``"biased"``), the two attacks of the paper.

    Parameters
    ----------
    n_users, n_items : population sizes (node types "user" and "item").
    block : (users, items) per fraud block.
    n_blocks : number of planted blocks.
    camouflage_ratio : camouflage edges per fraud edge (>= 0).
    seed : seeds the numpy Generator that drives every random choice.
    out : destination folder (created).
    honest_degree, block_density : see above.
    n_features : uninformative Gaussian ``f_*`` columns (structure is the only signal).
    camouflage : "random" or "biased" (see above).

    Returns
    -------
    The folder written, holding nodes.parquet (with ``label`` and ``ring_id``) and
    edges.parquet (relation "reviews").
    """
    if out is None:
        raise ValueError("make_fraudar_benchmark: out (destination folder) is required")
    bu, bi = block
    if n_blocks * bu > n_users or n_blocks * bi > n_items:
        raise ValueError(f"{n_blocks} blocks of {block} do not fit in {n_users} users x "
                         f"{n_items} items")
    if camouflage_ratio < 0:
        raise ValueError(f"camouflage_ratio must be >= 0, got {camouflage_ratio}")
    if camouflage not in ("random", "biased"):
        raise ValueError(f"camouflage must be 'random' or 'biased', got {camouflage!r}")
    rng = np.random.default_rng(seed)
    popularity = (1.0 + rng.permutation(n_items)) ** -0.7
    popularity /= popularity.sum()
    m = int(round(n_users * honest_degree))
    users = [rng.integers(0, n_users, m)]
    items = [rng.choice(n_items, size=m, p=popularity)]

    fraud_users = rng.permutation(n_users)[: n_blocks * bu].reshape(n_blocks, bu)
    fraud_items = rng.permutation(n_items)[: n_blocks * bi].reshape(n_blocks, bi)
    user_ring = np.full(n_users, -1)
    item_ring = np.full(n_items, -1)
    honest_items = np.setdiff1d(np.arange(n_items), fraud_items.ravel())
    camo_p = None
    if camouflage == "biased":
        camo_p = popularity[honest_items] / popularity[honest_items].sum()
    for b in range(n_blocks):
        user_ring[fraud_users[b]] = b
        item_ring[fraud_items[b]] = b
        uu, ii = np.meshgrid(fraud_users[b], fraud_items[b], indexing="ij")
        keep = rng.random(uu.shape) < block_density
        users.append(uu[keep])
        items.append(ii[keep])
        per_user = keep.sum(axis=1)
        n_camo = np.rint(per_user * camouflage_ratio).astype(np.int64)
        users.append(np.repeat(fraud_users[b], n_camo))
        items.append(rng.choice(honest_items, size=int(n_camo.sum()), p=camo_p))
    src = np.concatenate(users)
    dst = np.concatenate(items)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(max(n_users, n_items)))
    user_ids = _ids("U", n_users, width)
    item_ids = _ids("I", n_items, width)
    ring = pl.Series(np.concatenate([user_ring, item_ring]))
    nodes = pl.DataFrame({
        "node_id": pl.concat([user_ids, item_ids]),
        "node_type": ["user"] * n_users + ["item"] * n_items,
        **{f"f_{k}": rng.standard_normal(n_users + n_items) for k in range(n_features)},
        "label": (ring >= 0).cast(pl.Int8),
        "ring_id": pl.select(pl.when(ring >= 0).then(pl.format("ring{}", ring))).to_series(),
    })
    edges = pl.DataFrame({"src": user_ids.gather(src), "dst": item_ids.gather(dst),
                          "relation": "reviews"}).unique(maintain_order=True)
    nodes.write_parquet(out / NODES_FILE)
    edges.write_parquet(out / EDGES_FILE)
    return out
