"""Median imputation and robust scaling fitted on training rows (shared by model families)."""

from __future__ import annotations

from collections.abc import Callable

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from medfraud.detectors.state import decode_array, encode_array


@dataclass
class RobustScaler:
    """Impute NaN with the training median, then scale ``(x - median) / spread``.

    ``spread`` is the inter-quartile range, falling back to the standard deviation and
    then to 1 for constant columns, so a column never divides by zero.

    Attributes
    ----------
    median : shape (d,), float64.
    spread : shape (d,), float64, > 0.
    """

    median: np.ndarray
    spread: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> RobustScaler:
        """Fit on a training matrix ``X`` of shape (n, d) with NaN for missing values."""
        if X.shape[0] == 0:
            raise ValueError("cannot fit a scaler on 0 training rows")
        all_nan = np.isnan(X).all(axis=0)
        safe = np.where(all_nan[None, :], 0.0, X)
        median = np.nanmedian(safe, axis=0)
        q25, q75 = np.nanpercentile(safe, [25, 75], axis=0)
        spread = q75 - q25
        std = np.nanstd(safe, axis=0)
        spread = np.where(spread > 0, spread, np.where(std > 0, std, 1.0))
        return cls(median.astype(np.float64), spread.astype(np.float64))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Robust z-scores, shape (n, d), float64, no NaN."""
        if X.shape[1] != self.median.shape[0]:
            raise ValueError(f"matrix has {X.shape[1]} feature columns, scaler was fitted on "
                             f"{self.median.shape[0]}")
        Z = np.subtract(X, self.median[None, :])
        Z /= self.spread[None, :]
        Z[np.isnan(Z)] = 0.0  # a missing value is imputed by the median, whose z-score is 0
        return Z

    def to_state(self) -> dict[str, Any]:
        return {"median": encode_array(self.median), "spread": encode_array(self.spread)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RobustScaler:
        return cls(decode_array(state["median"]), decode_array(state["spread"]))


def top_feature_reasons(weights: np.ndarray, names: list[str], k: int = 3,
                        positive_only: bool = False) -> pl.Series:
    """Names of the ``k`` columns with the largest weight per row.

    Parameters
    ----------
    weights : shape (n, d); larger = more responsible for the row's score.
    names : the d column names.
    positive_only : drop reasons whose weight is <= 0 (e.g. SHAP contributions that
        lower the score).

    Returns
    -------
    Series ``reasons`` of dtype List(String), length n, most important first.
    """
    n, d = weights.shape
    k = min(k, d)
    if n == 0 or k == 0:
        return pl.Series("reasons", [[]] * n, dtype=pl.List(pl.String))
    top = _top_k_columns(weights, k)
    if positive_only:
        top = np.where(np.take_along_axis(weights, top, axis=1) > 0, top, d)  # d -> null name
    lookup = pl.Series("reasons", [*names, None], dtype=pl.String)
    flat = lookup.gather(top.ravel())
    return flat.reshape((n, k)).cast(pl.List(pl.String)).list.drop_nulls().alias("reasons")


def explain_threshold(training_scores: np.ndarray, share: float) -> float:
    """Score above which a row gets reasons: the (1 - share) quantile of the training scores.

    Alerts are read from the top of the ranking (audit budgets of 1-10 %), so explaining
    every row would cost most of a detector's scoring time for reasons nobody reads.  A
    threshold fitted once (not a share of each call) keeps a row's reasons independent of
    the other rows it is scored with.  ``share`` >= 1 explains every row (-inf).
    """
    if share >= 1.0:
        return -np.inf
    return float(np.quantile(training_scores, 1.0 - share))


def rows_to_explain(scores: np.ndarray, threshold: float, limit: int | None = None) -> np.ndarray:
    """Indices of the rows scoring at or above ``threshold``, at most ``limit`` of them (the
    highest first when the bound bites, a guard against a call that is all alerts)."""
    rows = np.flatnonzero(scores >= threshold)
    if limit is not None and rows.size > limit:
        rows = np.sort(rows[np.argsort(-scores[rows], kind="stable")[:limit]])
    return rows


def reasons_for_rows(n: int, rows: np.ndarray, explain: Callable[[np.ndarray], pl.Series]) -> pl.Series:
    """Reasons for the given row indices (k,), ``[]`` for the other of the n rows."""
    if rows.size == 0:  # explainers need at least one row (LightGBM's pred_contrib fails)
        return pl.Series("reasons", [[]] * n, dtype=pl.List(pl.String))
    reasons = explain(rows)
    # Row i takes explained reason position[i]; unexplained rows point at a trailing [].
    position = np.full(n, len(rows), dtype=np.int64)
    position[rows] = np.arange(len(rows))
    padded = pl.concat([reasons, pl.Series("reasons", [[]], dtype=pl.List(pl.String))])
    return padded.gather(position).alias("reasons")


def _top_k_columns(weights: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row, largest first, ties to the lower index.

    For the usual k <= 5, k passes of ``argmax`` (SIMD, one read of the matrix each) beat
    ``argpartition`` + sort several times over on millions of rows.
    """
    n = weights.shape[0]
    if k > 5:
        return np.argsort(-weights, axis=1, kind="stable")[:, :k]
    work = np.array(weights, dtype=np.float64 if weights.dtype == np.float64 else np.float32)
    work[np.isnan(work)] = -np.inf
    rows = np.arange(n)
    top = np.empty((n, k), dtype=np.int64)
    for j in range(k):  # k passes over the matrix, not a loop over rows
        top[:, j] = np.argmax(work, axis=1)
        work[rows, top[:, j]] = -np.inf
    return top
