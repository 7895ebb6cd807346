"""The ``pyod`` family: any PyOD outlier detector by name, on robust-scaled features.

Features are ``FeatureSet.matrix(level)`` with NaN imputed by the training medians and
robust scaling (median / IQR) fitted on the training rows.  The score is the model's
``decision_function`` (higher = more anomalous).  Reasons are the features whose
robust z-score deviates most from the training median for that row.

Three PyOD models are scored by medfraud itself so that ``score`` depends only on the
fitted state (PyOD issue #401) and the state can be exported without pickle:

* ``IForest``: PyOD/scikit-learn fit; scoring walks the fitted trees (rebuilt from their
  node arrays) exactly as scikit-learn does, so scores equal PyOD's.
* ``ECOD`` and ``COPOD``: PyOD's ``decision_function`` concatenates the scored batch to
  the training data, so a row's score changes with its batch.  medfraud computes the
  same tail probabilities against the training ECDF only (on a seeded sample of at most
  ``max_ecdf_rows`` training rows, smoothed ``(count + 1) / (n + 1)``).
* ``HBOS`` (integer ``n_bins``) is PyOD's own scoring; its histograms are exported.

Every other PyOD model is fitted and scored by PyOD and cannot be exported (retrain it).
"""

from __future__ import annotations

import importlib
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import skew

from medfraud.detectors.base import Detector, register, score_frame
from medfraud.detectors.preprocess import (
    RobustScaler,
    explain_threshold,
    reasons_for_rows,
    rows_to_explain,
    top_feature_reasons,
)
from medfraud.detectors.state import decode_array, encode_array
from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels

# PyOD model name -> module; the tabular, unsupervised detectors worth offering.
PYOD_MODELS = {
    "IForest": "pyod.models.iforest",
    "ECOD": "pyod.models.ecod",
    "COPOD": "pyod.models.copod",
    "HBOS": "pyod.models.hbos",
    "LOF": "pyod.models.lof",
    "KNN": "pyod.models.knn",
    "PCA": "pyod.models.pca",
    "MCD": "pyod.models.mcd",
    "OCSVM": "pyod.models.ocsvm",
    "CBLOF": "pyod.models.cblof",
    "LODA": "pyod.models.loda",
    "INNE": "pyod.models.inne",
    "GMM": "pyod.models.gmm",
    "KDE": "pyod.models.kde",
    "COF": "pyod.models.cof",
    "SOD": "pyod.models.sod",
    "ABOD": "pyod.models.abod",
}
EXPORTABLE = ("IForest", "ECOD", "COPOD", "HBOS")


def pyod_class(model: str) -> type:
    """The PyOD estimator class named ``model`` (e.g. ``"IForest"``)."""
    if model not in PYOD_MODELS:
        raise ValueError(f"unknown PyOD model {model!r}; valid names include "
                         f"{', '.join(sorted(PYOD_MODELS))}")
    return getattr(importlib.import_module(PYOD_MODELS[model]), model)


@register("pyod")
class PyODDetector(Detector):
    """An unsupervised PyOD detector at one level.

    Parameters
    ----------
    level : claim, patient, doctor, pharmacy or facility.
    model : PyOD class name, one of :data:`PYOD_MODELS`.
    params : keyword arguments of the PyOD class (e.g. ``{"n_estimators": 200}``).
    seed : passed as ``random_state`` to models that take one; also seeds the ECDF sample.
    columns : feature columns to use; default all of ``features.columns[level]``.
    max_ecdf_rows : training rows kept as the reference ECDF of ECOD/COPOD.
    n_reasons : number of reason features per row.
    explain : rows scoring at or above the training scores' (1 − explain) quantile get
        reasons (the others get []): a fitted threshold, so a row's reasons never depend on
        the rest of its batch; 1.0 explains every row.
    n_jobs : threads used to walk IForest trees when scoring.

    Attributes
    ----------
    columns_ : list[str], the fitted feature columns.
    scaler_ : RobustScaler fitted on the training rows.
    model_ : the fitted PyOD estimator (None when rebuilt from state).
    """

    def __init__(self, level: str = "claim", model: str = "IForest", params: dict | None = None,
                 seed: int = 0, columns: list[str] | None = None, max_ecdf_rows: int = 100_000,
                 n_reasons: int = 3, explain: float = 0.05, n_jobs: int = 2):
        pyod_class(model)  # fail at construction on an unknown name
        if not 0.0 <= explain <= 1.0:
            raise ValueError(f"explain must be in [0, 1], got {explain}")
        super().__init__(level, model=model, params=dict(params or {}), seed=seed, columns=columns,
                         max_ecdf_rows=max_ecdf_rows, n_reasons=n_reasons, explain=explain,
                         n_jobs=n_jobs)

    # --- fit -----------------------------------------------------------------------------
    def fit(self, features: FeatureSet, labels: Labels | None = None) -> PyODDetector:
        """Fit scaling and the PyOD model on every row of ``features`` at ``level``."""
        columns = list(self.params["columns"] or features.columns[self.level])
        if not columns:
            raise ValueError(f"{self.name}: no feature columns at level {self.level!r}")
        X = features.matrix(self.level, columns)
        if X.shape[0] < 2:
            raise ValueError(f"{self.name}: need at least 2 training rows, got {X.shape[0]}")
        self.scaler_ = RobustScaler.fit(X)
        Z = self.scaler_.transform(X)
        model_name = self.params["model"]
        if model_name in ("ECOD", "COPOD"):
            rng = np.random.default_rng(self.params["seed"])
            n_keep = min(Z.shape[0], self.params["max_ecdf_rows"])
            rows = np.sort(rng.choice(Z.shape[0], n_keep, replace=False)) if n_keep < Z.shape[0] \
                else np.arange(Z.shape[0])
            self.reference_ = np.sort(Z[rows], axis=0)
            self.skew_sign_ = np.sign(np.nan_to_num(skew(Z[rows], axis=0)))
            self.model_ = None
        else:
            cls = pyod_class(model_name)
            kwargs = dict(self.params["params"])
            if "random_state" in inspect.signature(cls.__init__).parameters:
                kwargs.setdefault("random_state", self.params["seed"])
            self.model_ = cls(**kwargs).fit(Z)
            if model_name == "IForest":
                self.forest_ = _forest_arrays(self.model_.detector_)
        self.columns_ = columns
        explain = self.params["explain"]
        self.explain_threshold_ = (-np.inf if explain >= 1.0
                                   else explain_threshold(self.decision_function(Z), explain))
        return self

    # --- score ---------------------------------------------------------------------------
    def decision_function(self, Z: np.ndarray) -> np.ndarray:
        """Raw anomaly scores of robust-scaled rows ``Z`` (n, d) -> (n,), higher = more anomalous."""
        model_name = self.params["model"]
        if model_name in ("ECOD", "COPOD"):
            return _ecdf_outlyingness(Z, self.reference_, self.skew_sign_, model_name)
        if model_name == "IForest":
            return _forest_decision(self.forest_, Z, self.params["n_jobs"])
        if model_name == "HBOS" and self.model_ is None:
            return self.hbos_().decision_function(Z)
        return self.model_.decision_function(Z)

    def score(self, features: FeatureSet) -> pl.DataFrame:
        """Score every row at ``level``: id, score (higher = more anomalous), top-3 reasons."""
        self._check_fitted("columns_")
        missing = [c for c in self.columns_ if c not in features.frame(self.level).columns]
        if missing:
            raise KeyError(f"{self.name}: feature columns missing at level {self.level!r}: {missing[:5]}"
                           f" ({len(missing)} missing)")
        Z = self.scaler_.transform(features.matrix(self.level, self.columns_))
        scores = self.decision_function(Z)
        def explain(rows: np.ndarray) -> pl.Series:
            # float32 halves the memory traffic of ranking deviations; ties are irrelevant here
            return top_feature_reasons(np.abs(Z[rows], dtype=np.float32), self.columns_,
                                       self.params["n_reasons"], positive_only=True)

        reasons = reasons_for_rows(len(scores), rows_to_explain(scores, self.explain_threshold_), explain)
        return score_frame(features.ids(self.level), scores, reasons)

    # --- state ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-safe fitted state (IForest, ECOD, COPOD, HBOS with integer ``n_bins`` only)."""
        self._check_fitted("columns_")
        model_name = self.params["model"]
        state: dict[str, Any] = {"family": self.family, "params": self.get_params(),
                                 "columns": self.columns_, "scaler": self.scaler_.to_state(),
                                 # None, not -inf: strict JSON has no infinities
                                 "explain_threshold": (None if np.isinf(self.explain_threshold_)
                                                       else self.explain_threshold_)}
        if model_name in ("ECOD", "COPOD"):
            state["reference"] = encode_array(self.reference_)
            state["skew_sign"] = encode_array(self.skew_sign_)
        elif model_name == "IForest":
            state["forest"] = _encode_forest(self.forest_)
        elif model_name == "HBOS" and not isinstance(self._hbos_model().n_bins, str):
            hbos = self._hbos_model()
            state["hbos"] = {"n_bins": int(hbos.n_bins), "alpha": float(hbos.alpha),
                             "tol": float(hbos.tol), "bin_edges": encode_array(hbos.bin_edges_),
                             "hist": encode_array(hbos.hist_)}
        else:
            raise NotImplementedError(
                f"{self.name}: PyOD model {model_name!r} cannot be exported without pickle; "
                f"exportable models are {EXPORTABLE} (retrain other models where they are used)")
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PyODDetector:
        """Rebuild a fitted detector from :meth:`to_state` output."""
        det = cls(**state["params"])
        det.columns_ = list(state["columns"])
        det.scaler_ = RobustScaler.from_state(state["scaler"])
        threshold = state.get("explain_threshold")
        det.explain_threshold_ = -np.inf if threshold is None else float(threshold)
        det.model_ = None
        if "reference" in state:
            det.reference_ = decode_array(state["reference"])
            det.skew_sign_ = decode_array(state["skew_sign"])
        elif "forest" in state:
            det.forest_ = _decode_forest(state["forest"])
        elif "hbos" in state:
            det.hbos_state_ = state["hbos"]
        return det

    def _hbos_model(self):
        return self.model_ if self.model_ is not None else self.hbos_()

    def hbos_(self):
        """A PyOD HBOS carrying the exported histograms (used after ``from_state``)."""
        from pyod.models.hbos import HBOS

        s = self.hbos_state_
        model = HBOS(n_bins=s["n_bins"], alpha=s["alpha"], tol=s["tol"])
        model.bin_edges_ = decode_array(s["bin_edges"])
        model.hist_ = decode_array(s["hist"])
        return model


# --- ECOD / COPOD against the training ECDF ---------------------------------------------------
def _ecdf_outlyingness(Z: np.ndarray, reference: np.ndarray, skew_sign: np.ndarray,
                       model: str) -> np.ndarray:
    """ECOD/COPOD scores of ``Z`` (n, d) using the sorted training columns ``reference`` (m, d)."""
    m, d = reference.shape
    left = np.empty_like(Z)
    right = np.empty_like(Z)
    for j in range(d):  # loop over features (d ~ tens), vectorised over rows
        left[:, j] = np.searchsorted(reference[:, j], Z[:, j], side="right")
        right[:, j] = m - np.searchsorted(reference[:, j], Z[:, j], side="left")
    u_left = -np.log((left + 1.0) / (m + 1.0))
    u_right = -np.log((right + 1.0) / (m + 1.0))
    u_skew = u_left * -np.sign(skew_sign - 1) + u_right * np.sign(skew_sign + 1)
    if model == "ECOD":
        outlying = np.maximum(np.maximum(u_left, u_right), u_skew)
    else:
        outlying = np.maximum(u_skew, (u_left + u_right) / 2)
    return outlying.sum(axis=1)


# --- IForest: tree arrays, scoring, export -----------------------------------------------------
def _average_path_length(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful BST search in ``n`` samples (Liu et al. 2008)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _forest_arrays(forest) -> dict[str, Any]:
    """What scoring needs from a fitted scikit-learn IsolationForest (pure arrays)."""
    trees = []
    for tree_idx, (estimator, feats) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        nodes = estimator.tree_.__getstate__()["nodes"]
        # Depth of each node plus the expected depth below a leaf, minus one as in
        # scikit-learn, so a leaf maps directly to its contribution.
        leaf_depth = (forest._decision_path_lengths[tree_idx]
                      + forest._average_path_length_per_tree[tree_idx] - 1.0)
        trees.append({"features": np.asarray(feats, dtype=np.int64),
                      "left": nodes["left_child"].astype(np.int64),
                      "right": nodes["right_child"].astype(np.int64),
                      "feature": nodes["feature"].astype(np.int64),
                      "threshold": nodes["threshold"].astype(np.float64),
                      "leaf_depth": leaf_depth.astype(np.float64)})
    return {"trees": trees, "n_features": int(forest.n_features_in_),
            "max_samples": float(forest._max_samples), "offset": float(forest.offset_),
            "compiled": [_compile_tree(t, int(forest.n_features_in_)) for t in trees]}


def _compile_tree(tree: dict[str, Any], n_features: int):
    """A scikit-learn Tree rebuilt from node arrays, for its fast ``apply``."""
    from sklearn.tree._tree import NODE_DTYPE, Tree

    n_nodes = tree["left"].shape[0]
    nodes = np.zeros(n_nodes, dtype=NODE_DTYPE)
    nodes["left_child"] = tree["left"]
    nodes["right_child"] = tree["right"]
    nodes["feature"] = tree["feature"]
    nodes["threshold"] = tree["threshold"]
    nodes["n_node_samples"] = 1
    nodes["weighted_n_node_samples"] = 1.0
    depth = _node_depths(tree["left"], tree["right"])
    compiled = Tree(len(tree["features"]) if len(tree["features"]) else n_features,
                    np.array([1], dtype=np.intp), 1)
    compiled.__setstate__({"max_depth": int(depth.max()), "node_count": n_nodes, "nodes": nodes,
                           "values": np.zeros((n_nodes, 1, 1), dtype=np.float64)})
    return compiled


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(left.shape[0], dtype=np.int64)
    frontier = np.array([0])
    level = 0
    while frontier.size:  # loop over tree levels, not rows
        depth[frontier] = level
        children = np.concatenate([left[frontier], right[frontier]])
        frontier = children[children >= 0]
        level += 1
    return depth


def _forest_decision(forest: dict[str, Any], Z: np.ndarray, n_jobs: int) -> np.ndarray:
    """PyOD IForest ``decision_function`` (= -sklearn ``decision_function``) from tree arrays."""
    X32 = np.ascontiguousarray(Z, dtype=np.float32)
    all_features = forest["n_features"]

    def tree_depths(i: int) -> np.ndarray:
        tree = forest["trees"][i]
        feats = tree["features"]
        X = X32 if len(feats) == all_features and np.array_equal(feats, np.arange(all_features)) \
            else np.ascontiguousarray(X32[:, feats])
        return tree["leaf_depth"][forest["compiled"][i].apply(X)]

    n_trees = len(forest["trees"])
    with ThreadPoolExecutor(max(1, n_jobs)) as pool:  # Tree.apply releases the GIL
        depths = np.zeros(Z.shape[0])
        for d in pool.map(tree_depths, range(n_trees)):
            depths += d
    denominator = n_trees * _average_path_length(np.array([forest["max_samples"]]))[0]
    score_samples = -(2.0 ** (-depths / denominator))
    return -(score_samples - forest["offset"])


def _encode_forest(forest: dict[str, Any]) -> dict[str, Any]:
    return {"n_features": forest["n_features"], "max_samples": forest["max_samples"],
            "offset": forest["offset"],
            "trees": [{k: encode_array(v) for k, v in t.items()} for t in forest["trees"]]}


def _decode_forest(blob: dict[str, Any]) -> dict[str, Any]:
    trees = [{k: decode_array(v) for k, v in t.items()} for t in blob["trees"]]
    return {"trees": trees, "n_features": int(blob["n_features"]),
            "max_samples": float(blob["max_samples"]), "offset": float(blob["offset"]),
            "compiled": [_compile_tree(t, int(blob["n_features"])) for t in trees]}
