"""``graph_tree``: LightGBM on node features plus aggregated neighbour features.

The GADBench finding (Tang et al., NeurIPS 2023): gradient-boosted trees on a node's own
features and its neighbourhood's aggregated features are a strong graph-anomaly baseline.
For every relation into the scored node type we add the mean and max of the neighbours'
features (1 hop) and of the neighbours' own 1-hop means (2 hops).  Means are sparse
matrix products with a row-normalised adjacency; maxima use ``np.maximum.reduceat`` over
the CSR rows, so there is no loop over nodes.  Reasons are the features with the largest
positive LightGBM ``pred_contrib`` (SHAP values of the tree model).
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import scipy.sparse as sp

from medfraud.detectors.base import Detector, register, score_frame
from medfraud.detectors.gnn import graph_target
from medfraud.features.frameset import FeatureSet
from medfraud.graph.core import ClaimsGraph, EdgeType, require_graph
from medfraud.labels import Labels


def _row_normalised(adjacency: sp.csr_matrix) -> sp.csr_matrix:
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return sp.csr_matrix(sp.diags(inverse) @ adjacency)


def sparse_max(adjacency: sp.csr_matrix, values: np.ndarray) -> np.ndarray:
    """Row-wise max of neighbour values: (n_dst, n_src) CSR, (n_src, d) -> (n_dst, d).

    Rows without neighbours get 0.
    """
    adjacency = sp.csr_matrix(adjacency)
    adjacency.sort_indices()
    n_rows, d = adjacency.shape[0], values.shape[1]
    out = np.zeros((n_rows, d))
    if adjacency.nnz == 0 or d == 0:
        return out
    gathered = values[adjacency.indices]
    starts = adjacency.indptr[:-1]
    nonempty = np.diff(adjacency.indptr) > 0
    # reduceat needs valid starts; empty rows are masked afterwards
    reduced = np.maximum.reduceat(gathered, np.minimum(starts, adjacency.nnz - 1), axis=0)
    out[nonempty] = reduced[nonempty]
    return out


def neighbour_features(graph: ClaimsGraph, node_type: str,
                       hops: int = 2) -> tuple[np.ndarray, list[str]]:
    """Own features plus 1- and 2-hop (mean, max) aggregates per relation into ``node_type``.

    Returns float64 (n, d_total) and the column names.
    """
    graph.require_node_type(node_type)
    own = {t: graph.data[t].x.double().numpy() for t in graph.node_types}
    blocks = [own[node_type]]
    names = [f"self.{c}" for c in graph.feature_names[node_type]]

    def into(t: str) -> list[tuple[EdgeType, sp.csr_matrix]]:
        # adjacency oriented (n_dst, n_src) for messages src -> dst
        return [(et, sp.csr_matrix(graph.adjacency(et).T)) for et in graph.relations_into(t)]

    one_hop_mean: dict[str, np.ndarray] = {}
    if hops >= 2:
        for t in graph.node_types:
            parts = [_row_normalised(a) @ own[et[0]] for et, a in into(t)]
            one_hop_mean[t] = np.column_stack(parts) if parts else np.zeros((own[t].shape[0], 0))
    for et, adjacency in into(node_type):
        src = et[0]
        src_names = graph.feature_names[src]
        blocks += [_row_normalised(adjacency) @ own[src], sparse_max(adjacency, own[src])]
        names += [f"{et[1]}.mean.{c}" for c in src_names] + [f"{et[1]}.max.{c}" for c in src_names]
        if hops >= 2 and one_hop_mean[src].shape[1]:
            second = one_hop_mean[src]
            second_names = [f"{r[1]}.{c}" for r, _ in into(src) for c in graph.feature_names[r[0]]]
            blocks += [_row_normalised(adjacency) @ second, sparse_max(adjacency, second)]
            names += [f"{et[1]}.2hop_mean.{c}" for c in second_names]
            names += [f"{et[1]}.2hop_max.{c}" for c in second_names]
    return np.column_stack(blocks), names


@register("graph_tree")
class GraphTreeDetector(Detector):
    """LightGBM on node plus neighbourhood-aggregate features (supervised).

    Parameters
    ----------
    level : level scored (graph node type ``node_type``, default ``level``).
    node_type, typology, label_source : which nodes and labels (see the gnn detector).
    hops : 1 or 2 hops of aggregates.
    n_reasons : reason codes per node.
    seed : LightGBM seed.
    **lgbm : remaining LightGBM parameters (num_leaves, n_estimators, learning_rate, ...).

    Attributes
    ----------
    booster_ : the trained ``lightgbm.Booster``.
    feature_names_ : names of the model's input columns.
    """

    supervised = True
    own_keys = ("node_type", "typology", "label_source", "hops", "n_reasons", "seed")

    def _p(self, key: str, default: Any) -> Any:
        return self.params.get(key, default)

    @property
    def node_type(self) -> str:
        return self._p("node_type", None) or self.level

    def fit(self, features: FeatureSet, labels: Labels | None = None) -> GraphTreeDetector:
        graph = require_graph(features, self.name)
        X, names = neighbour_features(graph, self.node_type, int(self._p("hops", 2)))
        y = graph_target(graph, self.level, self.node_type, labels, self._p("typology", None),
                         self._p("label_source", "full"), features)
        if y is None:
            raise ValueError(f"{self.name} is supervised: pass labels or a graph with a label "
                             f"column for node type {self.node_type!r}")
        labelled = np.isfinite(y)
        if len(np.unique(y[labelled])) < 2:
            raise ValueError(f"{self.name}: labelled {self.node_type} nodes hold one class only")
        params = {"objective": "binary", "n_estimators": 200, "learning_rate": 0.05,
                  "num_leaves": 15, "min_child_samples": 5, "is_unbalance": True,
                  "deterministic": True, "force_row_wise": True, "num_threads": 1,
                  "verbose": -1, "seed": int(self._p("seed", 0))}
        params.update({k: v for k, v in self.params.items() if k not in self.own_keys})
        rounds = int(params.pop("n_estimators"))
        dataset = lgb.Dataset(X[labelled], y[labelled], feature_name=_safe_names(names),
                              free_raw_data=True)
        self.booster_ = lgb.train(params, dataset, num_boost_round=rounds)
        self.feature_names_ = names
        return self

    def score(self, features: FeatureSet) -> pl.DataFrame:
        self._check_fitted("booster_")
        graph = require_graph(features, self.name)
        X, names = neighbour_features(graph, self.node_type, int(self._p("hops", 2)))
        if names != self.feature_names_:
            raise ValueError(f"{self.name}: graph features differ from the fitted ones "
                             f"({len(names)} vs {len(self.feature_names_)} columns)")
        scores = self.booster_.predict(X)
        contrib = self.booster_.predict(X, pred_contrib=True)[:, :-1]
        k = min(int(self._p("n_reasons", 3)), contrib.shape[1])
        top = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        reason_names = np.asarray(names, dtype=object)[top]
        # sorted descending, so the positive contributions are a prefix of each row
        n_positive = (np.take_along_axis(contrib, top, axis=1) > 0).sum(axis=1)
        reasons = (pl.DataFrame({"r": pl.Series(reason_names.astype(str)).cast(pl.List(pl.String)),
                                 "n": n_positive})
                   .select(pl.col("r").list.head(pl.col("n")))["r"])
        return score_frame(graph.node_ids[self.node_type], scores, reasons.rename("reasons"))


    def to_state(self) -> dict[str, Any]:
        """{"family", "params", "model": LightGBM model text, "feature_names"} (no pickle)."""
        self._check_fitted("booster_")
        return {"family": self.family, "params": self.get_params(),
                "model": self.booster_.model_to_string(), "feature_names": self.feature_names_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GraphTreeDetector:
        detector = cls(**state["params"])
        detector.booster_ = lgb.Booster(model_str=state["model"])
        detector.feature_names_ = list(state["feature_names"])
        return detector


def _safe_names(names: list[str]) -> list[str]:
    # LightGBM rejects some JSON special characters in feature names
    return [n.replace(":", "_").replace(",", "_").replace('"', "_") for n in names]
