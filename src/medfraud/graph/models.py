"""Graph neural network layers and models (no training loops; see ``detectors/gnn.py``).

* :class:`HeteroSAGE` — heterogeneous GraphSAGE: per-type input projections, then
  ``HeteroConv`` of ``SAGEConv`` per relation, summed per destination type.
* :class:`BWGNN` — Beta-wavelet band-pass filters (Tang et al., ICML 2022) on the
  homogeneous projection, for camouflaged / heterophilous fraud whose signal sits in the
  high-frequency part of the graph spectrum.
* :class:`Dominant` — DOMINANT (Ding et al., SDM 2019): GCN encoder with an attribute
  decoder and a structure decoder; the reconstruction error is the anomaly score.

Laplacian polynomials use ``torch.sparse`` matrix products (no torch-sparse / pyg-lib).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GCNConv, HeteroConv, SAGEConv

from medfraud.graph.core import MeanAdjacency, mean_adjacency

EdgeType = tuple[str, str, str]


def _sparse_products(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``sum_r matrix_r @ x_r`` (CSR times dense), accumulated in one output buffer.

    ``torch.addmm(..., beta=0, out=...)`` into an uninitialised buffer skips the zero fill
    and result copy that ``torch.sparse.mm`` adds around the MKL kernel (4x faster for a
    (200k, 32) result); ``beta=0`` ignores the buffer's content, NaN included.
    """
    matrix, x = pairs[0]
    out = torch.empty((matrix.shape[0], x.shape[1]), dtype=x.dtype)
    torch.addmm(out, matrix, x.contiguous(), beta=0.0, out=out)
    for matrix, x in pairs[1:]:
        torch.addmm(out, matrix, x.contiguous(), out=out)
    return out


class _SumOfSparseProducts(torch.autograd.Function):
    """``sum_r matrix_r @ x_r`` for constant CSR matrices whose transposes are precomputed.

    The gradient of each ``x_r`` is one CSR product with the stored transpose — torch's own
    backward of a CSR product would rebuild the transpose on every call.
    """

    @staticmethod
    def forward(ctx, adjacencies: tuple[MeanAdjacency, ...], *xs: torch.Tensor) -> torch.Tensor:
        ctx.adjacencies = adjacencies  # constants, not tensors autograd differentiates
        return _sparse_products([(a.matrix, x) for a, x in zip(adjacencies, xs)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None, *(_sparse_products([(adjacency.transpose, grad)]) if needed else None
                        for adjacency, needed in zip(ctx.adjacencies, ctx.needs_input_grad[1:])))


def mean_aggregate(pairs: list[tuple[torch.Tensor, MeanAdjacency]]) -> torch.Tensor:
    """Sum over relations of the mean of each destination node's incoming source rows.

    Parameters
    ----------
    pairs : (x_src float32 (n_src_r, d), adjacency (n_dst, n_src_r)) per relation, all with
        the same destination type and width ``d``.

    Returns
    -------
    float32 (n_dst, d). One relation gives PyG's scatter-mean over its ``edge_index`` (0
    for nodes without incoming edges), computed as a sparse CSR product (MKL on CPU),
    several times faster than gathering one message per edge and scattering it back.
    """
    if not pairs:
        raise ValueError("mean_aggregate needs at least one (x_src, adjacency) pair")
    for k, (x, adjacency) in enumerate(pairs):
        if x.shape[0] != adjacency.matrix.shape[1]:
            raise ValueError(f"mean_aggregate: pair {k}: x_src has {x.shape[0]} rows but the "
                             f"adjacency has {adjacency.matrix.shape[1]} source nodes")
    return _SumOfSparseProducts.apply(tuple(a for _, a in pairs), *(x for x, _ in pairs))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with a mask from ``torch.rand_like`` (seeded by the global generator).

    Same distribution as ``nn.functional.dropout``, but the mask costs one uniform draw and
    a comparison: on CPU that is about 3x cheaper than ``bernoulli_`` on a (200k, 32) tensor.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight^T + bias``, with the weight gradient computed as ``x^T @ grad``.

    ``nn.functional.linear`` (and ``x @ weight.t()``) get the weight gradient as
    ``(grad^T @ x)^T``, which MKL runs about 4x slower when ``x`` is tall and narrow (200k
    patients x 6 features); a contiguous copy of ``weight^T`` (a few KB) avoids that path.
    """
    weight_t = weight.t().contiguous()
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


class HeteroSAGE(nn.Module):
    """Heterogeneous GraphSAGE classifier for one target node type.

    Per layer and destination type t: ``sum over relations r into t of
    lin_l_r(mean of the r-neighbours) + lin_r_r(h_t)``, then ReLU, a residual and dropout —
    PyG's ``HeteroConv({r: SAGEConv(mean)}, aggr="sum")``, whose modules hold the parameters
    (same names, same initialisation).  The forward pass computes it faster on CPU:

    * mean aggregation is a sparse product with each relation's precomputed row-normalised
      adjacency (:class:`~medfraud.graph.core.MeanAdjacency`) instead of a per-edge
      gather/scatter;
    * ``lin_l`` is applied on the smaller side of each relation (before the mean when the
      sources are fewer than the destinations, e.g. 7k doctors -> 200k patients), and the
      root terms of all relations into a type share one weight (``sum_r W_rr``, they are
      linear in the same ``h_t``) and one GEMM with the late-transformed means;
    * only the types the target's logits depend on are computed: layer ``L`` updates the
      target type alone, layer ``L-1`` the target and its in-neighbour types, and so on.

    Parameters
    ----------
    in_dims : node type -> input feature width.
    edge_types : relations to pass messages along (include reverses for both directions).
    target : node type whose logits are returned.
    hidden : width of every hidden layer.
    layers : number of message-passing layers.
    dropout : dropout probability between layers.
    out_dim : number of classes (2 for fraud / normal).
    """

    def __init__(self, in_dims: dict[str, int], edge_types: list[EdgeType], target: str,
                 hidden: int = 32, layers: int = 2, dropout: float = 0.2, out_dim: int = 2):
        super().__init__()
        self.target = target
        self.dropout = dropout
        self.edge_types = [tuple(et) for et in edge_types]
        self.project = nn.ModuleDict({t: nn.Linear(d, hidden) for t, d in in_dims.items()})
        self.convs = nn.ModuleList(
            HeteroConv({et: SAGEConv(hidden, hidden) for et in self.edge_types}, aggr="sum")
            for _ in range(layers))
        self.head = nn.Linear(hidden, out_dim)

    def reset_parameters(self) -> None:
        for module in [*self.project.values(), *self.convs, self.head]:
            module.reset_parameters()

    def _plan(self, relations: list[EdgeType]) -> tuple[set[str], list[list[str]]]:
        """(types to project, per layer the destination types to update), target-driven."""
        order = list(self.project)
        wanted = {self.target}
        per_layer = []
        for _ in self.convs:
            per_layer.append([t for t in order if t in wanted])
            wanted = wanted | {s for s, _, d in relations if d in wanted}
        return wanted, per_layer[::-1]

    @staticmethod
    def _update(conv: HeteroConv, h: dict[str, torch.Tensor], t: str, into: list[EdgeType],
                adjacency: dict[EdgeType, MeanAdjacency]) -> torch.Tensor:
        """New representation of type ``t``: ReLU(sum of its relations' SAGEConv) + h_t.

        ``lin_l`` commutes with the mean, so each relation applies it on its smaller side:
        sources with fewer nodes than ``t`` are transformed first and their means summed
        into one buffer (:func:`mean_aggregate`); larger sources are averaged first and
        transformed, together with the root term, in one GEMM.
        """
        sage = {et: conv.convs[et] for et in into}
        n_t = h[t].shape[0]
        early = [et for et in into if h[et[0]].shape[0] < n_t]
        late = [et for et in into if h[et[0]].shape[0] >= n_t]
        root = torch.stack([m.lin_r.weight for m in sage.values()]).sum(0)
        bias = torch.stack([m.lin_l.bias for m in sage.values()]).sum(0)
        if late:
            means = [mean_aggregate([(h[et[0]], adjacency[et])]) for et in late]
            inputs = torch.cat([*means, h[t]], dim=1)
            weight = torch.cat([*(sage[et].lin_l.weight for et in late), root], dim=1)
        else:
            inputs, weight = h[t], root
        out = linear(inputs, weight, bias)
        if early:
            out = out + mean_aggregate([(linear(h[et[0]], sage[et].lin_l.weight),
                                         adjacency[et]) for et in early])
        return torch.relu(out) + h[t]

    def forward(self, x_dict: dict[str, torch.Tensor],
                edge_index_dict: dict[EdgeType, torch.Tensor | MeanAdjacency]) -> torch.Tensor:
        """Logits of the target nodes, float32 (n_target, out_dim).

        ``edge_index_dict`` maps relations to a :class:`~medfraud.graph.core.MeanAdjacency`
        (fast: build it once with ``ClaimsGraph.mean_adjacency``) or to an int64 (2, m)
        ``edge_index`` (converted on every call).  Relations missing from it, or from the
        model, carry no messages (as with ``HeteroConv``).
        """
        if self.target not in x_dict:
            raise KeyError(f"HeteroSAGE: x_dict has no features for the target type "
                           f"{self.target!r}; types: {list(x_dict)}")
        relations = [et for et in self.edge_types if et in edge_index_dict]
        projected, per_layer = self._plan(relations)
        missing = sorted(projected - set(x_dict))
        if missing:
            raise KeyError(f"HeteroSAGE: x_dict lacks node type(s) {missing} that send messages "
                           f"towards {self.target!r}")
        adjacency = {}
        for et in relations:
            adj = edge_index_dict[et]
            if not isinstance(adj, MeanAdjacency):
                adj = mean_adjacency(adj, x_dict[et[0]].shape[0], x_dict[et[2]].shape[0])
            adjacency[et] = adj
        h = {t: torch.relu(linear(x_dict[t], self.project[t].weight, self.project[t].bias))
             for t in self.project if t in projected}
        for conv, types in zip(self.convs, per_layer):
            new = {}
            for t in types:
                into = [et for et in relations if et[2] == t]
                # node types receiving no messages keep their previous representation
                new[t] = self._update(conv, h, t, into, adjacency) if into else h[t]
            h = {t: dropout(v, self.dropout, self.training) for t, v in new.items()}
        return self.head(h[self.target])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(target={self.target!r}, types={list(self.project)}, "
                f"layers={len(self.convs)}, hidden={self.head.in_features})")


def normalized_laplacian(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric normalised Laplacian L = I - D^-1/2 A D^-1/2, sparse COO (n, n) float32.

    ``edge_index`` must already hold both directions of every undirected edge.
    """
    src, dst = edge_index
    deg = torch.bincount(src, minlength=n).float()
    inv_sqrt = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    values = -inv_sqrt[src] * inv_sqrt[dst]
    loops = torch.arange(n)
    has_edge = (deg > 0).float()
    rows = torch.cat([src, loops])
    cols = torch.cat([dst, loops])
    vals = torch.cat([values, has_edge])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n),
                                   check_invariants=True).coalesce()


def beta_wavelet_coefficients(order: int) -> np.ndarray:
    """Polynomial coefficients of the C+1 Beta wavelets of order C = ``order``.

    Row i gives the coefficients (ascending powers of L) of
    (L/2)^i (1 - L/2)^(C-i) / B(i+1, C+1-i): i = 0 is low-pass, i = C high-pass.
    Returns float64 (C+1, C+1).
    """
    coeffs = np.zeros((order + 1, order + 1))
    half = np.polynomial.Polynomial([0.0, 0.5])
    one_minus_half = np.polynomial.Polynomial([1.0, -0.5])
    for i in range(order + 1):
        beta = math.gamma(i + 1) * math.gamma(order + 1 - i) / math.gamma(order + 2)
        poly = half ** i * one_minus_half ** (order - i) / beta
        coeffs[i, : len(poly.coef)] = poly.coef
    return coeffs


class BWGNN(nn.Module):
    """Beta-wavelet graph neural network on a homogeneous graph.

    Parameters
    ----------
    in_dim : input feature width.
    hidden : hidden width.
    order : wavelet order C (C+1 band-pass filters).
    out_dim : number of classes.
    dropout : dropout on the hidden representation.
    """

    def __init__(self, in_dim: int, hidden: int = 32, order: int = 2, out_dim: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.order = order
        self.dropout = dropout
        self.register_buffer("coeffs", torch.tensor(beta_wavelet_coefficients(order),
                                                    dtype=torch.float32))
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(hidden * (order + 1), hidden), nn.ReLU(),
                                  nn.Linear(hidden, out_dim))

    def reset_parameters(self) -> None:
        for module in [*self.encoder, *self.head]:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        """Logits of every node, float32 (N, out_dim); ``laplacian`` from
        :func:`normalized_laplacian`."""
        h = self.encoder(x)
        h = nn.functional.dropout(h, self.dropout, self.training)
        powers = [h]
        for _ in range(self.order):
            powers.append(torch.sparse.mm(laplacian, powers[-1]))
        stacked = torch.stack(powers)  # (C+1, N, hidden): L^k h
        filtered = torch.einsum("ik,knh->inh", self.coeffs, stacked)
        return self.head(torch.cat(list(filtered), dim=1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order}, hidden={self.head[0].out_features})"


class Dominant(nn.Module):
    """DOMINANT graph auto-encoder.

    Parameters
    ----------
    in_dim : input feature width.
    hidden : hidden width of the encoder and decoders.
    layers : GCN layers in the encoder (the attribute decoder mirrors it).
    dropout : dropout between layers.
    """

    def __init__(self, in_dim: int, hidden: int = 32, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        dims = [in_dim] + [hidden] * layers
        self.encoder = nn.ModuleList(GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:]))
        back = [hidden] * layers + [in_dim]
        self.attr_decoder = nn.ModuleList(GCNConv(a, b) for a, b in zip(back[:-1], back[1:]))
        self.struct_decoder = GCNConv(hidden, hidden)

    def reset_parameters(self) -> None:
        for conv in [*self.encoder, *self.attr_decoder, self.struct_decoder]:
            conv.reset_parameters()

    def _stack(self, convs: nn.ModuleList, h: torch.Tensor, edge_index: torch.Tensor,
               last_linear: bool) -> torch.Tensor:
        for k, conv in enumerate(convs):
            h = conv(h, edge_index)
            if not (last_linear and k == len(convs) - 1):
                h = torch.relu(h)
                h = nn.functional.dropout(h, self.dropout, self.training)
        return h

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (reconstructed attributes (N, in_dim), structure embeddings (N, hidden));
        the edge probability of (u, v) is sigmoid(z_u . z_v)."""
        z = self._stack(self.encoder, x, edge_index, last_linear=False)
        x_hat = self._stack(self.attr_decoder, z, edge_index, last_linear=True)
        s = torch.relu(self.struct_decoder(z, edge_index))
        return x_hat, s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={len(self.encoder)})"
