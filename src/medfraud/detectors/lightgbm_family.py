"""The ``lightgbm`` family: gradient-boosted trees on labelled rows, supervised or PU.

``mode="supervised"`` learns the full training target (``Labels.target(level, ids,
typology, source="full")``).  ``mode="pu"`` learns only from the partial audit table
(``source="audited"``) with the Elkan–Noto (2008) positive-unlabelled method:

1. ``s = 1`` for audited positives (P); ``s = 0`` for every other row (unaudited rows and
   audited negatives together form U).
2. A classifier ``g(x) ≈ P(s = 1 | x)`` is trained on s, early-stopped on a stratified,
   seeded validation fold of the training rows.
3. ``c = mean g(x)`` over the held-out positives of that fold estimates the label
   frequency ``P(s = 1 | y = 1)``; the score is ``g(x) / c ≈ P(y = 1 | x)`` (it may exceed 1
   where the selected-completely-at-random assumption fails; ranking is unaffected).

Class imbalance is handled by ``scale_pos_weight = n_negative / n_positive`` on the
fitting rows.  Training is deterministic (``seed``, ``deterministic=True``,
``force_row_wise=True``, ``num_threads``).  Reasons are the features with the largest
positive contribution to the row's log-odds (exact path-dependent TreeSHAP: the values of
LightGBM's ``pred_contrib=True``, from :class:`~medfraud.detectors.treeshap.TreeShap`'s
per-leaf tables, several times faster on depth-bounded trees), computed for rows
scoring at or above the (1 - ``explain``) quantile of the training
scores (default the top 5 %, at most ``max_explained`` rows per call; rows below get no
reasons), so a row's reasons do not depend on the rows scored with it.
Probabilities are ``booster.predict``'s, bit for bit, from
:class:`~medfraud.detectors.treeshap.TreePredictor` (vectorised over blocks of rows, about
3× cheaper than LightGBM's row-by-row walk).
The fitted model travels as LightGBM text (``to_state`` / ``from_state``).
"""

from __future__ import annotations

from typing import Any, Callable

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.model_selection import train_test_split

from medfraud.detectors.base import Detector, register, score_frame
from medfraud.detectors.preprocess import (
    explain_threshold,
    reasons_for_rows,
    rows_to_explain,
    top_feature_reasons,
)
from medfraud.detectors.treeshap import TreePredictor, TreeShap
from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels

MODES = ("supervised", "pu")
PARALLEL_PREDICT_ROWS = 4096  # fewer rows are predicted on one thread


@register("lightgbm")
class LightGBMDetector(Detector):
    """LightGBM binary classifier as a detector.

    Parameters
    ----------
    level : claim, patient, doctor, pharmacy or facility.
    mode : "supervised" (full labels) or "pu" (audited labels, Elkan–Noto).
    typology : learn one typology's positives only; None = any fraud.
    seed : seeds the validation split and LightGBM.
    columns : feature columns; default ``features.columns[level]``.
    num_leaves, learning_rate, n_estimators, min_child_samples, feature_fraction,
    bagging_fraction, lambda_l2 : LightGBM parameters.
    max_depth : deepest split (-1: unbounded, LightGBM's default).  TreeSHAP reasons cost
        about leaves × depth² per tree and row, and the table TreeSHAP needs bounded paths;
        leaf-wise trees of 31 leaves grow 13 deep on claims, so the claim configuration's
        bound of 8 makes reasons ~19× cheaper (docs/detectors.md).
    early_stopping_rounds : rounds without validation improvement before stopping.
    valid_fraction : share of training rows held out (stratified) for early stopping
        and, in PU mode, for estimating c.
    num_threads : LightGBM threads.
    n_reasons : reason features per row.
    explain : rows scoring at or above the training scores' (1 - explain) quantile get
        TreeSHAP reasons (the others get none): SHAP costs far more than scoring, and only
        the top of the ranking is ever audited (budgets of 1-5 %).  1.0 explains every row.
    max_explained : upper bound on the number of explained rows per ``score`` call (the
        highest scores first), a guard against a call made only of alerts.
    lgb_params : extra LightGBM parameters, applied last.

    Attributes
    ----------
    booster_ : lightgbm.Booster truncated at the best iteration.
    columns_ : list[str].
    label_frequency_ : float, Elkan–Noto c (1.0 in supervised mode).
    """

    supervised = True

    def __init__(self, level: str = "claim", mode: str = "supervised", typology: str | None = None,
                 seed: int = 0, columns: list[str] | None = None, num_leaves: int = 31,
                 max_depth: int = -1, learning_rate: float = 0.1, n_estimators: int = 300,
                 min_child_samples: int = 20,
                 feature_fraction: float = 0.8, bagging_fraction: float = 1.0, lambda_l2: float = 0.0,
                 early_stopping_rounds: int = 30, valid_fraction: float = 0.2, num_threads: int = 2,
                 n_reasons: int = 3, explain: float = 0.05, max_explained: int = 10_000,
                 lgb_params: dict | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= explain <= 1.0:
            raise ValueError(f"explain must be in [0, 1], got {explain}")
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
        super().__init__(level, mode=mode, typology=typology, seed=seed, columns=columns,
                         num_leaves=num_leaves, max_depth=max_depth, learning_rate=learning_rate,
                         n_estimators=n_estimators,
                         min_child_samples=min_child_samples, feature_fraction=feature_fraction,
                         bagging_fraction=bagging_fraction, lambda_l2=lambda_l2,
                         early_stopping_rounds=early_stopping_rounds, valid_fraction=valid_fraction,
                         num_threads=num_threads, n_reasons=n_reasons, explain=explain,
                         max_explained=max_explained, lgb_params=dict(lgb_params or {}))

    def _lgb_params(self, scale_pos_weight: float) -> dict[str, Any]:
        p = self.params
        params = {"objective": "binary", "metric": "average_precision", "verbosity": -1,
                  "num_leaves": p["num_leaves"], "max_depth": p["max_depth"],
                  "learning_rate": p["learning_rate"],
                  "min_child_samples": p["min_child_samples"], "feature_fraction": p["feature_fraction"],
                  "bagging_fraction": p["bagging_fraction"],
                  "bagging_freq": 1 if p["bagging_fraction"] < 1 else 0,
                  "lambda_l2": p["lambda_l2"], "scale_pos_weight": scale_pos_weight,
                  "seed": p["seed"], "deterministic": True, "force_row_wise": True,
                  "num_threads": p["num_threads"]}
        params.update(p["lgb_params"])
        return params

    def fit(self, features: FeatureSet, labels: Labels | None = None) -> LightGBMDetector:
        """Train on every row of ``features`` at ``level`` with targets from ``labels``."""
        if labels is None:
            raise ValueError(f"{self.name} is supervised: fit() needs labels")
        columns = list(self.params["columns"] or features.columns[self.level])
        X = features.matrix(self.level, columns)
        ids = features.ids(self.level)
        if self.params["mode"] == "supervised":
            y = labels.target(self.level, ids, self.params["typology"], source="full").to_numpy()
        else:
            audited = labels.target(self.level, ids, self.params["typology"], source="audited")
            y = audited.fill_null(0).to_numpy()  # s: audited positive vs everything else
        y = y.astype(np.int8)
        n_pos = int(y.sum())
        if n_pos < 2 or n_pos > len(y) - 2:
            what = "audited positives" if self.params["mode"] == "pu" else "positives"
            raise ValueError(f"{self.name}: need at least 2 {what} and 2 other rows to train, got "
                             f"{n_pos} of {len(y)} rows (typology={self.params['typology']!r})")
        fit_rows, valid_rows = train_test_split(np.arange(len(y)), test_size=self.params["valid_fraction"],
                                                stratify=y, random_state=self.params["seed"])
        fit_rows, valid_rows = np.sort(fit_rows), np.sort(valid_rows)
        y_fit = y[fit_rows]
        scale = float((y_fit == 0).sum()) / max(1.0, float(y_fit.sum()))
        train_set = lgb.Dataset(X[fit_rows], y_fit, feature_name=columns, free_raw_data=True)
        valid_set = lgb.Dataset(X[valid_rows], y[valid_rows], reference=train_set)
        booster = lgb.train(self._lgb_params(scale), train_set, num_boost_round=self.params["n_estimators"],
                            valid_sets=[valid_set], valid_names=["valid"],
                            callbacks=[lgb.early_stopping(self.params["early_stopping_rounds"],
                                                          verbose=False)])
        best = booster.best_iteration or booster.current_iteration()
        # Keep only the best iterations; the fitted and the reloaded model are then the same text.
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self.columns_ = columns
        self.best_iteration_ = int(best)
        if self.params["mode"] == "pu":
            held_out_pos = valid_rows[y[valid_rows] == 1]
            c = float(self.booster_.predict(X[held_out_pos]).mean())
            self.label_frequency_ = c if c > 0 else 1.0
        else:
            self.label_frequency_ = 1.0
        self.explain_threshold_ = (-np.inf if self.params["explain"] >= 1.0 else explain_threshold(
            self.booster_.predict(X, num_threads=self.params["num_threads"]), self.params["explain"]))
        return self

    def score(self, features: FeatureSet) -> pl.DataFrame:
        """Score every row at ``level``: probability of fraud (PU: g(x)/c) and top reasons."""
        self._check_fitted("booster_")
        frame = features.frame(self.level)
        missing = [c for c in self.columns_ if c not in frame.columns]
        if missing:
            raise KeyError(f"{self.name}: feature columns missing at level {self.level!r}: {missing[:5]}"
                           f" ({len(missing)} missing)")
        X = features.matrix(self.level, self.columns_)
        # Below a few thousand rows, starting threads costs more than the trees.
        threads = self.params["num_threads"] if X.shape[0] >= PARALLEL_PREDICT_ROWS else 1
        probability = self._compiled("_predictor", TreePredictor).predict(X, num_threads=threads)
        return score_frame(features.ids(self.level), probability / self.label_frequency_,
                           self._reasons(X, probability))

    def _reasons(self, X: np.ndarray, probability: np.ndarray) -> pl.Series:
        """TreeSHAP reasons for rows at or above the fitted ``explain_threshold_`` (at most
        ``max_explained``, the highest); [] for the others."""
        def explain(rows: np.ndarray) -> pl.Series:
            contributions = self._tree_shap().contributions(X[rows])
            return top_feature_reasons(contributions[:, :-1], self.columns_, self.params["n_reasons"],
                                       positive_only=True)

        rows = rows_to_explain(probability, self.explain_threshold_, self.params["max_explained"])
        return reasons_for_rows(len(probability), rows, explain)

    def prepare_scoring(self) -> None:
        """Build the predictor and the TreeSHAP tables and load their compiled kernels, so
        that the first call scores at full speed."""
        self._check_fitted("booster_")
        self._compiled("_predictor", TreePredictor).warm()
        self._tree_shap().warm()

    def _tree_shap(self) -> TreeShap:
        """The booster's TreeSHAP explainer (see :meth:`_compiled`)."""
        return self._compiled("_explainer", lambda booster: TreeShap(booster, self.params["num_threads"]))

    def _compiled(self, attribute: str, build: Callable[[lgb.Booster], Any]) -> Any:
        """``build(booster_)``, made on first use (flattening the trees takes a fraction of a
        second) and kept in ``attribute`` while the booster is the same."""
        compiled = getattr(self, attribute, None)
        if compiled is None or compiled.booster is not self.booster_:
            compiled = build(self.booster_)
            setattr(self, attribute, compiled)
        return compiled

    def feature_importance(self) -> pl.DataFrame:
        """Total split gain per feature: columns feature (String), gain (Float64), descending."""
        self._check_fitted("booster_")
        gain = self.booster_.feature_importance(importance_type="gain")
        return (pl.DataFrame({"feature": self.columns_, "gain": gain.astype(np.float64)})
                .sort(["gain", "feature"], descending=[True, False]))

    def to_state(self) -> dict[str, Any]:
        """Params, columns, Elkan–Noto c and the model as LightGBM text."""
        self._check_fitted("booster_")
        return {"family": self.family, "params": self.get_params(), "columns": self.columns_,
                "label_frequency": self.label_frequency_, "best_iteration": self.best_iteration_,
                "explain_threshold": (None if np.isinf(self.explain_threshold_)
                                      else self.explain_threshold_),
                "model": self.booster_.model_to_string()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LightGBMDetector:
        det = cls(**state["params"])
        det.booster_ = lgb.Booster(model_str=state["model"])
        det.columns_ = list(state["columns"])
        det.label_frequency_ = float(state["label_frequency"])
        det.best_iteration_ = int(state["best_iteration"])
        # States written before the threshold existed explain every row (still per-row).
        threshold = state.get("explain_threshold")
        det.explain_threshold_ = -np.inf if threshold is None else float(threshold)
        return det
