import numpy as np
import polars as pl
import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter

from medfraud.graph.core import ClaimsGraph, MeanAdjacency, add_relation, mean_adjacency


def _random_edges(rng: np.random.Generator, n_src: int, n_dst: int, m: int) -> torch.Tensor:
    src = rng.integers(0, n_src, m)
    dst = rng.integers(0, n_dst // 2, m)  # upper half of the destinations gets no edge
    edge_index = np.stack([np.concatenate([src, src[:5]]), np.concatenate([dst, dst[:5]])])
    return torch.from_numpy(edge_index)  # the first 5 edges are duplicated


def test_mean_adjacency_is_pyg_scatter_mean():
    rng = np.random.default_rng(0)
    n_src, n_dst = 30, 40
    edge_index = _random_edges(rng, n_src, n_dst, 120)
    x = torch.randn(n_src, 3, dtype=torch.float32)
    adjacency = mean_adjacency(edge_index, n_src, n_dst)
    assert isinstance(adjacency, MeanAdjacency) and adjacency.shape == (n_dst, n_src)
    assert adjacency.matrix.layout == torch.sparse_csr and adjacency.matrix.dtype == torch.float32
    expected = scatter(x[edge_index[0]], edge_index[1], dim=0, dim_size=n_dst, reduce="mean")
    got = torch.sparse.mm(adjacency.matrix, x)
    torch.testing.assert_close(got, expected)
    assert (got[n_dst // 2:] == 0).all()  # nodes without incoming edges get 0, as in PyG
    dense = adjacency.matrix.to_dense()
    torch.testing.assert_close(adjacency.transpose.to_dense(), dense.T)
    rows = dense.sum(dim=1)
    torch.testing.assert_close(rows[rows > 0], torch.ones(int((rows > 0).sum())))


def test_mean_adjacency_errors():
    with pytest.raises(ValueError, match=r"destination indices must lie in \[0, 3\), found \[0, 5\]"):
        mean_adjacency(torch.tensor([[0, 1], [0, 5]]), 2, 3)
    with pytest.raises(ValueError, match="source indices"):
        mean_adjacency(torch.tensor([[-1, 1], [0, 1]]), 2, 3)
    with pytest.raises(ValueError, match=r"shape \(2, m\)"):
        mean_adjacency(torch.tensor([0, 1, 2]), 3, 3)
    empty = mean_adjacency(torch.zeros((2, 0), dtype=torch.long), 4, 2)
    assert (torch.sparse.mm(empty.matrix, torch.ones(4, 2)) == 0).all()


def _small_graph() -> ClaimsGraph:
    data = HeteroData()
    data["doctor"].x = torch.zeros((3, 1))
    data["patient"].x = torch.zeros((4, 1))
    add_relation(data, ("doctor", "treats", "patient"), np.array([0, 0, 2]), np.array([1, 2, 3]),
                 np.ones((3, 4)))
    ids = {"doctor": pl.Series(["D0", "D1", "D2"]), "patient": pl.Series(["P0", "P1", "P2", "P3"])}
    return ClaimsGraph(data=data, node_ids=ids, feature_names={"doctor": ["f"], "patient": ["f"]})


def test_graph_caches_mean_adjacency_until_edges_change():
    graph = _small_graph()
    et = ("doctor", "treats", "patient")
    first = graph.mean_adjacency(et)
    assert graph.mean_adjacency(et) is first  # built once, reused every epoch
    assert first.shape == (4, 3)
    rev = graph.mean_adjacency(("patient", "rev_treats", "doctor"))
    torch.testing.assert_close(rev.matrix.to_dense(),
                               torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0] * 4, [0.0, 0.0, 0.0, 1.0]]))
    graph.data[et].edge_index[1, 0] = 0  # in place: the cached matrix is stale
    moved = graph.mean_adjacency(et)
    assert moved is not first and moved.matrix.to_dense()[0, 0] == 1.0
    graph.data[et].edge_index = torch.tensor([[1], [1]])  # replaced
    assert graph.mean_adjacency(et).matrix.to_dense().sum() == 1.0
    with pytest.raises(KeyError, match="no edge type"):
        graph.mean_adjacency(("doctor", "knows", "doctor"))
