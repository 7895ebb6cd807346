"""``gnn``: graph neural networks over the claims graph (models in ``medfraud.graph.models``).

Architectures (``arch``):

* ``"sage"`` — heterogeneous GraphSAGE, semi-supervised on the labelled nodes;
* ``"bwgnn"`` — Beta-wavelet band-pass filters on the homogeneous projection, the
  fraud-aware choice for camouflaged, heterophilous fraud;
* ``"dominant"`` — unsupervised DOMINANT auto-encoder (no labels needed); the score is the
  node's attribute + structure reconstruction error.

Training is full-batch on CPU with Adam, class-weighted cross-entropy and early stopping
on the AUPRC of a seeded, stratified validation split of the labelled nodes.  Every random
choice flows from ``seed`` (``torch.manual_seed`` inside a forked RNG, numpy Generator for
the split), and deterministic algorithms are switched on while training.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from sklearn.metrics import average_precision_score

from medfraud.detectors.base import register, score_frame
from medfraud.detectors.graph_base import GraphDetector
from medfraud.features.frameset import FeatureSet
from medfraud.graph.core import ClaimsGraph, require_graph
from medfraud.graph.models import BWGNN, Dominant, HeteroSAGE, normalized_laplacian
from medfraud.labels import Labels

ARCHS = ("sage", "bwgnn", "dominant")


@contextlib.contextmanager
def seeded_torch(seed: int):
    """Seed torch and force deterministic kernels, restoring the global state afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def graph_target(graph: ClaimsGraph, level: str, node_type: str, labels: Labels | None,
                 typology: str | None, source: str,
                 features: FeatureSet | None = None) -> np.ndarray | None:
    """Labels of ``node_type`` nodes as float (n,) with NaN for unlabelled; None if none exist.

    ``labels`` (claims datasets) wins; otherwise a generic graph's ``label`` column is used.
    The graph holds every entity, including those a split puts on the test side: when
    ``features`` has rows at ``level``, nodes outside them are unlabelled (NaN), never 0.
    """
    ids = graph.node_ids[node_type]
    if labels is not None:
        y = labels.target(level, ids, typology, source)
        if features is not None and level in features.frames:
            y = pl.when(ids.is_in(features.ids(level).implode())).then(y).otherwise(None)
            y = pl.select(y.alias("y")).to_series()
    elif node_type in graph.labels:
        y = graph.labels[node_type]
    else:
        return None
    return y.cast(pl.Float64).fill_null(np.nan).to_numpy()


def stratified_split(labelled: np.ndarray, y: np.ndarray, val_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled node indices into (train, val), keeping the class ratio, seeded."""
    train, val = [], []
    for cls in (0.0, 1.0):
        idx = rng.permutation(labelled[y[labelled] == cls])
        n_val = int(round(len(idx) * val_fraction))
        if cls == 1.0 and len(idx) >= 2:
            n_val = max(1, n_val)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@register("gnn")
class GNNDetector(GraphDetector):
    """Graph neural network detector.

    Parameters
    ----------
    level : level scored; its nodes are ``node_type`` (defaults to ``level``).
    arch : "sage", "bwgnn" or "dominant".
    node_type : graph node type scored (set it for generic graphs, e.g. "user").
    typology, label_source : passed to ``Labels.target`` ("full" or "audited").
    hidden, layers, order, dropout : model size (``order`` for BWGNN).
    epochs, lr, weight_decay, patience, val_fraction : training.
    alpha : DOMINANT weight of the attribute error (1 - alpha for structure).
    seed : seeds every random choice.

    Attributes
    ----------
    model_ : the trained ``torch.nn.Module``.
    model_config_ : JSON-able dict needed to rebuild ``model_`` (input widths, relations).
    history_ : per-epoch dicts (epoch, loss, val_auprc).
    best_epoch_ : epoch whose weights were kept.
    """

    supervised = True
    defaults: ClassVar[dict[str, Any]] = {
        "arch": "bwgnn", "node_type": None, "typology": None, "label_source": "full",
        "hidden": 32, "layers": 2, "order": 2, "dropout": 0.1, "epochs": 200, "lr": 0.01,
        "weight_decay": 5e-4, "patience": 30, "val_fraction": 0.2, "alpha": 0.8, "seed": 0,
    }

    def __init__(self, level: str = "doctor", **params: Any):
        super().__init__(level, **params)
        if self._p("arch") not in ARCHS:
            raise ValueError(f"gnn: arch must be one of {ARCHS}, got {self._p('arch')!r}")

    @property
    def learns_labels(self) -> bool:
        """False for ``arch="dominant"``: it reconstructs the graph and reads no label."""
        return self._p("arch") != "dominant"

    # -- model construction -------------------------------------------------------------
    @staticmethod
    def _config_of(graph: ClaimsGraph, arch: str) -> dict[str, Any]:
        if arch == "sage":
            return {"in_dims": {t: int(graph.data[t].x.shape[1]) for t in graph.node_types},
                    "edge_types": [list(et) for et in graph.edge_types]}
        type_dims = {t: int(graph.data[t].x.shape[1]) for t in graph.node_types}
        # homogeneous input: widest type's features + one-hot type block
        return {"in_dim": max(type_dims.values(), default=0) + len(type_dims),
                "type_dims": type_dims}

    def _build(self, config: dict[str, Any]) -> torch.nn.Module:
        arch, hidden = self._p("arch"), int(self._p("hidden"))
        if arch == "sage":
            return HeteroSAGE(config["in_dims"], [tuple(et) for et in config["edge_types"]],
                              self.node_type, hidden=hidden, layers=int(self._p("layers")),
                              dropout=float(self._p("dropout")))
        if arch == "bwgnn":
            return BWGNN(config["in_dim"], hidden=hidden, order=int(self._p("order")),
                         dropout=float(self._p("dropout")))
        return Dominant(config["in_dim"], hidden=hidden, layers=int(self._p("layers")),
                        dropout=float(self._p("dropout")))

    def _inputs(self, graph: ClaimsGraph) -> dict[str, Any]:
        """Tensors the forward pass needs, and where the target nodes sit."""
        graph.require_node_type(self.node_type)
        if self._p("arch") == "sage":
            # row-normalised CSR adjacencies, built once and cached on the graph
            return {"x_dict": {t: graph.data[t].x for t in graph.node_types},
                    "edge_index_dict": {et: graph.mean_adjacency(et) for et in graph.edge_types},
                    "offset": 0}
        x, edge_index, offsets = graph.homogeneous()
        inputs: dict[str, Any] = {"x": x, "edge_index": edge_index,
                                  "offset": offsets[self.node_type]}
        if self._p("arch") == "bwgnn":
            inputs["laplacian"] = normalized_laplacian(edge_index, x.shape[0])
        return inputs

    def _check_compatible(self, graph: ClaimsGraph) -> None:
        config = self._config_of(graph, self._p("arch"))
        if config != self.model_config_:
            raise ValueError(f"{self.name}: graph does not match the fitted model (fitted on "
                             f"{self.model_config_}, got {config})")

    def _logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        arch = self._p("arch")
        if arch == "sage":
            return self.model_(inputs["x_dict"], inputs["edge_index_dict"])
        return self.model_(inputs["x"], inputs["laplacian"])

    # -- training -----------------------------------------------------------------------
    def fit(self, features: FeatureSet, labels: Labels | None = None) -> GNNDetector:
        graph = require_graph(features, self.name)
        graph.require_node_type(self.node_type)
        arch = self._p("arch")
        self.model_config_ = self._config_of(graph, arch)
        seed = int(self._p("seed"))
        with seeded_torch(seed):
            self.model_ = self._build(self.model_config_)
            inputs = self._inputs(graph)
            if arch == "dominant":
                self._fit_dominant(inputs, seed)
            else:
                y = graph_target(graph, self.level, self.node_type, labels, self._p("typology"),
                                 self._p("label_source"), features)
                if y is None or not np.isfinite(y).any():
                    raise ValueError(f"{self.name}: arch {arch!r} is semi-supervised but no labels "
                                     f"exist for node type {self.node_type!r}; pass labels or use "
                                     "arch='dominant'")
                self._fit_supervised(inputs, y, np.random.default_rng(seed))
        return self

    def _fit_supervised(self, inputs: dict[str, Any], y: np.ndarray,
                        rng: np.random.Generator) -> None:
        labelled = np.flatnonzero(np.isfinite(y))
        if len(np.unique(y[labelled])) < 2:
            raise ValueError(f"{self.name}: labelled {self.node_type} nodes hold one class only "
                             f"({len(labelled)} labelled); need positives and negatives")
        train, val = stratified_split(labelled, y, float(self._p("val_fraction")), rng)
        offset = inputs["offset"]
        target = torch.from_numpy(np.nan_to_num(y, nan=0.0)).long()
        n_pos = max(1.0, float(y[train].sum()))
        # inverse class frequency: fraud is rare, so its errors must weigh more
        weight = torch.tensor([1.0, (len(train) - n_pos) / n_pos], dtype=torch.float32)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
        # foreach: one multi-tensor update instead of a loop of small ops per parameter
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=float(self._p("lr")),
                                     weight_decay=float(self._p("weight_decay")), foreach=True)
        train_t = torch.from_numpy(train)
        use_val = len(val) > 0 and 0 < y[val].sum() < len(val)
        best = (-np.inf, 0, None)
        self.history_ = []
        patience = int(self._p("patience"))
        for epoch in range(int(self._p("epochs"))):
            self.model_.train()
            optimizer.zero_grad()
            logits = self._logits(inputs)
            logits = logits[offset: offset + len(y)]
            loss = loss_fn(logits[train_t], target[train_t])
            loss.backward()
            optimizer.step()
            record = {"epoch": epoch, "loss": loss.item()}
            if use_val:
                self.model_.eval()
                with torch.no_grad():
                    prob = self._target_probs(inputs, len(y))
                auprc = float(average_precision_score(y[val], prob[val]))
                record["val_auprc"] = auprc
                if auprc > best[0]:
                    best = (auprc, epoch, {k: v.clone() for k, v in self.model_.state_dict().items()})
                elif epoch - best[1] >= patience:
                    self.history_.append(record)
                    break
            self.history_.append(record)
        if best[2] is not None:
            self.model_.load_state_dict(best[2])
            self.best_epoch_ = best[1]
        else:
            self.best_epoch_ = len(self.history_) - 1
        self.model_.eval()

    def _target_probs(self, inputs: dict[str, Any], n: int) -> np.ndarray:
        logits = self._logits(inputs)
        offset = inputs["offset"]
        logits = logits[offset: offset + n]
        return torch.softmax(logits, dim=1)[:, 1].double().numpy()

    def _structure_pairs(self, edge_index: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        """Negative (non-)edges for the structure loss: as many as edges, seeded."""
        gen = torch.Generator().manual_seed(seed)
        m = edge_index.shape[1]
        return torch.randint(0, n, (2, m), generator=gen)

    def _dominant_errors(self, inputs: dict[str, Any], negatives: torch.Tensor) -> torch.Tensor:
        """Per-node reconstruction error (N,): alpha * attribute + (1 - alpha) * structure."""
        x, edge_index = inputs["x"], inputs["edge_index"]
        n = x.shape[0]
        alpha = float(self._p("alpha"))
        x_hat, s = self.model_(x, edge_index)
        attr = ((x - x_hat) ** 2).sum(dim=1).sqrt()
        # DOMINANT reconstructs the dense adjacency; on millions of nodes we score each node
        # on its own edges (target 1) and on as many random pairs (target 0) instead.
        pos = torch.sigmoid((s[edge_index[0]] * s[edge_index[1]]).sum(dim=1))
        neg = torch.sigmoid((s[negatives[0]] * s[negatives[1]]).sum(dim=1))
        err = torch.zeros(n).index_add(0, edge_index[0], (1 - pos) ** 2)
        err = err.index_add(0, negatives[0], neg ** 2)
        count = torch.zeros(n).index_add(0, edge_index[0], torch.ones_like(pos))
        count = count.index_add(0, negatives[0], torch.ones_like(neg))
        struct = (err / count.clamp(min=1)).sqrt()
        return alpha * attr + (1 - alpha) * struct

    def _fit_dominant(self, inputs: dict[str, Any], seed: int) -> None:
        negatives = self._structure_pairs(inputs["edge_index"], inputs["x"].shape[0], seed)
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=float(self._p("lr")),
                                     weight_decay=float(self._p("weight_decay")))
        self.history_ = []
        for epoch in range(int(self._p("epochs"))):
            self.model_.train()
            optimizer.zero_grad()
            loss = self._dominant_errors(inputs, negatives).mean()
            loss.backward()
            optimizer.step()
            self.history_.append({"epoch": epoch, "loss": loss.item()})
        self.best_epoch_ = len(self.history_) - 1
        self.model_.eval()

    # -- scoring ------------------------------------------------------------------------
    def score(self, features: FeatureSet) -> pl.DataFrame:
        self._check_fitted("model_")
        graph = require_graph(features, self.name)
        self._check_compatible(graph)
        inputs = self._inputs(graph)
        n = graph.num_nodes(self.node_type)
        self.model_.eval()
        with torch.no_grad():
            if self._p("arch") == "dominant":
                negatives = self._structure_pairs(inputs["edge_index"], inputs["x"].shape[0],
                                                  int(self._p("seed")))
                errors = self._dominant_errors(inputs, negatives)
                offset = inputs["offset"]
                scores = errors[offset: offset + n].double().numpy()
            else:
                scores = self._target_probs(inputs, n)
        return score_frame(graph.node_ids[self.node_type], scores)

    # -- state export (no pickle: state_dict bytes loaded with weights_only=True) --------
    def to_state(self) -> dict[str, Any]:
        """{"family": "gnn", "state_dict": bytes of ``torch.save(state_dict)``,
        "params": JSON string of the parameters and the model shape}."""
        self._check_fitted("model_")
        buffer = io.BytesIO()
        torch.save(self.model_.state_dict(), buffer)
        params = {"params": self.get_params(), "model_config": self.model_config_}
        return {"family": self.family, "state_dict": buffer.getvalue(),
                "params": json.dumps(params)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GNNDetector:
        """Rebuild a fitted detector from :meth:`to_state` output."""
        meta = json.loads(state["params"])
        detector = cls(**meta["params"])
        detector.model_config_ = meta["model_config"]
        with seeded_torch(int(detector._p("seed"))):
            detector.model_ = detector._build(detector.model_config_)
        weights = torch.load(io.BytesIO(state["state_dict"]), weights_only=True)
        detector.model_.load_state_dict(weights)
        detector.model_.eval()
        return detector
