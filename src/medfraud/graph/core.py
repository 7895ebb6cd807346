"""The :class:`ClaimsGraph`: a PyG ``HeteroData`` plus the node index <-> id mapping.

Both the claims graph (:func:`medfraud.graph.build.build_claims_graph`) and a generic graph
folder (:func:`medfraud.graph.generic.load_generic_graph`) produce this class, so every graph
detector runs on either.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

EdgeType = tuple[str, str, str]

REVERSE_PREFIX = "rev_"

# Column order of every edge_attr tensor built by this package.
EDGE_ATTRS = ("count", "amount", "first_day", "last_day")


@dataclass(frozen=True)
class MeanAdjacency:
    """Row-normalised adjacency of one relation, for mean aggregation as a sparse product.

    Attributes
    ----------
    matrix : sparse CSR float32 (n_dst, n_src); row ``v`` holds 1 / in-degree(v) at each
        source of ``v`` (a duplicated edge counts twice), so ``matrix @ x_src`` is the mean
        of the incoming messages, 0 for a node without any (PyG's scatter-mean).
    transpose : ``matrix.T`` as its own CSR (n_src, n_dst), kept so the backward pass is
        one more sparse product instead of a per-epoch transpose.
    """

    matrix: torch.Tensor
    transpose: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """(n_dst, n_src)."""
        return tuple(self.matrix.shape)


def _torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch flags every CSR tensor as "beta"; the products used here are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr), torch.from_numpy(matrix.indices),
            torch.from_numpy(matrix.data), matrix.shape, check_invariants=True)


def mean_adjacency(edge_index: torch.Tensor, n_src: int, n_dst: int) -> MeanAdjacency:
    """Build the :class:`MeanAdjacency` of an ``edge_index`` (int64 (2, m), row 0 = source).

    One O(m) pass (scipy COO -> CSR, duplicates summed, column indices sorted so the sparse
    products add in a fixed order); int32 indices while they fit, which halves the index
    traffic of every product.
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, m), got {tuple(edge_index.shape)}")
    src, dst = edge_index.numpy()
    for name, idx, n in (("source", src, n_src), ("destination", dst, n_dst)):
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"edge_index {name} indices must lie in [0, {n}), found "
                             f"[{idx.min()}, {idx.max()}]")
    ones = np.ones(len(src), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (dst, src)), shape=(n_dst, n_src))
    matrix.sum_duplicates()
    degree = np.diff(matrix.indptr)
    # entries are edge multiplicities after summing duplicates; per-row sums via reduceat
    # over the non-empty rows' starts (an empty row shares its start with the next row)
    row_sum = (np.add.reduceat(matrix.data, matrix.indptr[:-1][degree > 0]) if matrix.nnz
               else np.zeros(0, dtype=np.float32))
    inverse = np.zeros(n_dst, dtype=np.float32)
    inverse[degree > 0] = 1.0 / row_sum
    matrix.data *= np.repeat(inverse, degree)
    transpose = matrix.T.tocsr()
    transpose.sort_indices()
    return MeanAdjacency(_torch_csr(matrix), _torch_csr(transpose))


@dataclass
class ClaimsGraph:
    """A heterogeneous graph with stable node ids.

    Attributes
    ----------
    data : ``HeteroData``; ``data[t].x`` is float32 (n_t, d_t) and every edge type has
        ``edge_index`` int64 (2, m) and ``edge_attr`` float32 (m, 4) with columns
        :data:`EDGE_ATTRS` (count, amount in yuan, first and last day as days since
        1970-01-01; -1 where unknown).  Each relation ``(s, r, d)`` has its reverse
        ``(d, "rev_" + r, s)`` with the same attributes.
    node_ids : node type -> String Series of ids; position ``i`` is node index ``i``.
    feature_names : node type -> names of the columns of ``data[t].x``.
    labels : node type -> Int8 Series aligned with ``node_ids`` (null = unlabelled); only
        generic graphs carry labels (claims labels come from :class:`medfraud.labels.Labels`).
    window : (first, last) service date the edges cover, or None for all dates.
    """

    data: HeteroData
    node_ids: dict[str, pl.Series]
    feature_names: dict[str, list[str]]
    labels: dict[str, pl.Series] = field(default_factory=dict)
    window: tuple[date, date] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # edge type -> (edge_index it was built from, its version counter, MeanAdjacency)
    _mean_adjacency: dict[EdgeType, tuple[torch.Tensor, int, MeanAdjacency]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @property
    def node_types(self) -> list[str]:
        return list(self.node_ids)

    @property
    def edge_types(self) -> list[EdgeType]:
        return list(self.data.edge_types)

    def num_nodes(self, node_type: str) -> int:
        return len(self.node_ids[node_type])

    def require_node_type(self, node_type: str) -> None:
        if node_type not in self.node_ids:
            raise KeyError(f"graph has no node type {node_type!r}; node types: {self.node_types}")

    def index_of(self, node_type: str, ids: pl.Series | list[str]) -> np.ndarray:
        """Node indices of ``ids`` (int64, shape (len(ids),)); -1 for ids not in the graph."""
        self.require_node_type(node_type)
        lookup = pl.DataFrame({"id": self.node_ids[node_type].cast(pl.String)}).with_row_index("idx")
        query = pl.DataFrame({"id": pl.Series(ids, dtype=pl.String)})
        return (query.join(lookup, on="id", how="left", maintain_order="left")["idx"]
                .fill_null(-1).cast(pl.Int64).to_numpy())

    def relations_into(self, node_type: str) -> list[EdgeType]:
        """Edge types whose destination is ``node_type`` (messages flowing into it)."""
        return [et for et in self.edge_types if et[2] == node_type]

    def adjacency(self, edge_type: EdgeType, weight: str | None = None) -> sp.csr_matrix:
        """Sparse adjacency of one relation, shape (n_src, n_dst), float64.

        ``weight`` None gives 1 per edge; otherwise one of :data:`EDGE_ATTRS`.
        """
        if edge_type not in self.data.edge_types:
            raise KeyError(f"graph has no edge type {edge_type}; edge types: {self.edge_types}")
        store = self.data[edge_type]
        src, dst = store.edge_index.numpy()
        if weight is None:
            values = np.ones(len(src))
        else:
            if weight not in EDGE_ATTRS:
                raise KeyError(f"unknown edge weight {weight!r}; choose from {EDGE_ATTRS}")
            values = store.edge_attr[:, EDGE_ATTRS.index(weight)].double().numpy()
        shape = (self.num_nodes(edge_type[0]), self.num_nodes(edge_type[2]))
        return sp.csr_matrix((values, (src, dst)), shape=shape)

    def mean_adjacency(self, edge_type: EdgeType) -> MeanAdjacency:
        """Row-normalised adjacency of one relation for mean aggregation (messages src -> dst).

        Built once per relation and cached on the graph, so a training loop pays for it once
        rather than every epoch; the cache is rebuilt if ``edge_index`` is replaced or
        modified in place.
        """
        if edge_type not in self.data.edge_types:
            raise KeyError(f"graph has no edge type {edge_type}; edge types: {self.edge_types}")
        edge_index = self.data[edge_type].edge_index
        cached = self._mean_adjacency.get(edge_type)
        if cached is None or cached[0] is not edge_index or cached[1] != edge_index._version:
            adjacency = mean_adjacency(edge_index, self.num_nodes(edge_type[0]),
                                       self.num_nodes(edge_type[2]))
            cached = (edge_index, edge_index._version, adjacency)
            self._mean_adjacency[edge_type] = cached
        return cached[2]

    def homogeneous(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        """Project onto one node set for spectral / GCN models.

        Returns
        -------
        x : float32 (N, d_max + n_types) — each type's features zero-padded to the widest
            type, followed by a one-hot node-type block (types differ in meaning).
        edge_index : int64 (2, E), undirected and deduplicated, no self loops.
        offsets : node type -> index of its first node in the stacked order.
        """
        types = self.node_types
        d_max = max((self.data[t].x.shape[1] for t in types), default=0)
        offsets, blocks, start = {}, [], 0
        for k, t in enumerate(types):
            x_t = self.data[t].x
            n_t = x_t.shape[0]
            block = torch.zeros((n_t, d_max + len(types)), dtype=torch.float32)
            block[:, : x_t.shape[1]] = x_t
            block[:, d_max + k] = 1.0
            blocks.append(block)
            offsets[t] = start
            start += n_t
        x = torch.cat(blocks) if blocks else torch.zeros((0, 0))
        edges = []
        for s, _, d in self.edge_types:
            ei = self.data[s, _, d].edge_index
            edges.append(torch.stack([ei[0] + offsets[s], ei[1] + offsets[d]]))
        if edges:
            ei = torch.cat(edges, dim=1)
            ei = torch.cat([ei, ei.flip(0)], dim=1)
            ei = ei[:, ei[0] != ei[1]]
            ei = torch.unique(ei, dim=1)
        else:
            ei = torch.zeros((2, 0), dtype=torch.long)
        return x, ei, offsets

    def __repr__(self) -> str:
        nodes = ", ".join(f"{t}={self.num_nodes(t)}" for t in self.node_types)
        edges = ", ".join(f"{r}={self.data[s, r, d].edge_index.shape[1]}"
                          for s, r, d in self.edge_types if not r.startswith(REVERSE_PREFIX))
        return f"ClaimsGraph(nodes: {nodes}; edges: {edges})"


def add_relation(data: HeteroData, edge_type: EdgeType, src: np.ndarray, dst: np.ndarray,
                 attrs: np.ndarray) -> None:
    """Store a relation and its ``rev_`` reverse on ``data`` (arrays: int64 (m,), float (m, k))."""
    s, r, d = edge_type
    ei = torch.from_numpy(np.stack([src, dst]).astype(np.int64, copy=False))
    ea = torch.from_numpy(np.ascontiguousarray(attrs, dtype=np.float32))
    data[s, r, d].edge_index = ei
    data[s, r, d].edge_attr = ea
    data[d, REVERSE_PREFIX + r, s].edge_index = ei.flip(0).contiguous()
    data[d, REVERSE_PREFIX + r, s].edge_attr = ea


def require_graph(features: Any, who: str) -> ClaimsGraph:
    """The graph carried by a FeatureSet, or a clear error naming the caller."""
    graph = getattr(features, "graph", None)
    if graph is None:
        raise ValueError(f"{who} needs a graph but features.graph is None; build it with "
                         "features.graph = medfraud.graph.build_claims_graph(dataset, features, "
                         "window) or load one with medfraud.graph.load_generic_graph(path)")
    if not isinstance(graph, ClaimsGraph):
        raise TypeError(f"{who}: features.graph must be a ClaimsGraph, got {type(graph).__name__}")
    return graph
