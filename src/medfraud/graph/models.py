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

EdgeType = tuple[str, str, str]


class HeteroSAGE(nn.Module):
    """Heterogeneous GraphSAGE classifier for one target node type.

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
        self.project = nn.ModuleDict({t: nn.Linear(d, hidden) for t, d in in_dims.items()})
        self.convs = nn.ModuleList(
            HeteroConv({et: SAGEConv(hidden, hidden) for et in edge_types}, aggr="sum")
            for _ in range(layers))
        self.head = nn.Linear(hidden, out_dim)

    def reset_parameters(self) -> None:
        for module in [*self.project.values(), *self.convs, self.head]:
            module.reset_parameters()

    def forward(self, x_dict: dict[str, torch.Tensor],
                edge_index_dict: dict[EdgeType, torch.Tensor]) -> torch.Tensor:
        """Logits of the target nodes, float32 (n_target, out_dim)."""
        h = {t: torch.relu(self.project[t](x)) for t, x in x_dict.items()}
        for conv in self.convs:
            out = conv(h, edge_index_dict)
            # node types receiving no messages keep their previous representation
            h = {t: torch.relu(out[t]) + h[t] if t in out else h[t] for t in h}
            h = {t: nn.functional.dropout(v, self.dropout, self.training) for t, v in h.items()}
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
