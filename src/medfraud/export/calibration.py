"""From detector scores to one 0–1 risk: per-detector ECDF normalisation, Platt/isotonic
calibration and audit-budget bands.

* Each detector's raw score is mapped to its mid-rank position among the detector's own
  training scores (:class:`ReferenceCDF`), so detectors on different scales (LightGBM
  probabilities, rule-hit sums, isolation depths) become comparable numbers in [0, 1].
* The pipeline's *raw* score is the weighted mean of those positions.
* :class:`Calibration` maps the raw score to a probability of fraud, fitted on scores of a
  held-out (validation) window against its labels: Platt scaling (``risk = σ(a·s + b)``,
  strictly increasing, so the ranking and the bands are unchanged) or isotonic regression
  (a step function given by its thresholds).
* :class:`Bands` cut the raw score at the training scores' top 1 % (``high``) and top 5 %
  (``medium``): the audit budget of a review team that can look at one claim in twenty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

BAND_LABELS = ("low", "medium", "high")


@dataclass
class ReferenceCDF:
    """Mid-rank empirical CDF of a detector's training scores.

    Attributes
    ----------
    grid : shape (g,), float64, sorted quantiles of the training scores (g ≤ ``points``).
    """

    grid: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, points: int = 2001) -> ReferenceCDF:
        """Summarise training scores, shape (n,), by ``points`` evenly spaced quantiles."""
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            raise ValueError("cannot fit a reference CDF on zero finite scores")
        if scores.size <= points:
            return cls(np.sort(scores))
        return cls(np.quantile(scores, np.linspace(0.0, 1.0, points), method="linear"))

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Position of each score among the training scores, shape (n,), in [0, 1].

        Ties count half (mid-rank), so a score shared by 90 % of training rows (a rule
        detector's 0) maps to 0.45, not 0.9.  NaN stays NaN.
        """
        scores = np.asarray(scores, dtype=np.float64)
        left = np.searchsorted(self.grid, scores, side="left")
        right = np.searchsorted(self.grid, scores, side="right")
        out = (left + right) / (2.0 * self.grid.size)
        return np.where(np.isnan(scores), np.nan, out)

    def to_json(self) -> dict[str, Any]:
        return {"grid": self.grid.tolist()}

    @classmethod
    def from_json(cls, blob: dict[str, Any]) -> ReferenceCDF:
        return cls(np.asarray(blob["grid"], dtype=np.float64))


@dataclass
class Calibration:
    """Raw score -> probability of fraud.

    Attributes
    ----------
    method : "platt" or "isotonic".
    a, b : Platt slope and intercept (``risk = 1 / (1 + exp(-(a·s + b)))``).
    x, y : isotonic thresholds (raw score, risk), increasing; linear in between, clipped
        outside.
    fitted_on : rows, positives and window of the data it was fitted on (for the card).
    """

    method: str
    a: float = 1.0
    b: float = 0.0
    x: list[float] | None = None
    y: list[float] | None = None
    fitted_on: dict[str, Any] | None = None

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, method: str = "platt") -> Calibration:
        """Fit on raw scores, shape (n,), against 0/1 labels, shape (n,)."""
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int8)
        positives = int(labels.sum())
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
        if positives == 0 or positives == labels.size:
            raise ValueError(f"calibration needs both classes; got {positives} positive(s) among "
                             f"{labels.size} validation claims")
        info = {"rows": int(labels.size), "positives": positives}
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=1e6, max_iter=1000).fit(scores[:, None], labels)
            return cls("platt", a=float(model.coef_[0, 0]), b=float(model.intercept_[0]),
                       fitted_on=info)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
            return cls("isotonic", x=model.X_thresholds_.tolist(), y=model.y_thresholds_.tolist(),
                       fitted_on=info)
        raise ValueError(f"calibration method must be 'platt' or 'isotonic', got {method!r}")

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Risk in [0, 1], shape (n,), float64."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * scores + self.b)))
        return np.interp(scores, np.asarray(self.x), np.asarray(self.y))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "platt":
            out.update(a=self.a, b=self.b)
        else:
            out.update(x=self.x, y=self.y)
        out["fitted_on"] = self.fitted_on
        return out

    @classmethod
    def from_json(cls, blob: dict[str, Any]) -> Calibration:
        method = blob.get("method")
        if method == "platt":
            return cls("platt", a=float(blob["a"]), b=float(blob["b"]), fitted_on=blob.get("fitted_on"))
        if method == "isotonic":
            return cls("isotonic", x=list(map(float, blob["x"])), y=list(map(float, blob["y"])),
                       fitted_on=blob.get("fitted_on"))
        raise ValueError(f"calibration.json: unknown method {method!r}")


@dataclass
class Bands:
    """Thresholds on the raw score: ``high`` ≥ ``high_threshold`` > ``medium`` ≥ ``medium_threshold``.

    Attributes
    ----------
    high_share, medium_share : share of training claims at or above each threshold by
        construction (0.01 and 0.05: the audit budget).
    high_threshold, medium_threshold : raw-score thresholds (training quantiles 1 - share).
    """

    high_threshold: float
    medium_threshold: float
    high_share: float = 0.01
    medium_share: float = 0.05

    @classmethod
    def fit(cls, training_scores: np.ndarray, high_share: float = 0.01,
            medium_share: float = 0.05) -> Bands:
        """Thresholds from the raw scores of the training claims, shape (n,)."""
        if not 0 < high_share < medium_share < 1:
            raise ValueError(f"need 0 < high_share < medium_share < 1, got {high_share}, {medium_share}")
        s = np.asarray(training_scores, dtype=np.float64)
        s = s[np.isfinite(s)]
        if s.size == 0:
            raise ValueError("cannot set bands from zero training scores")
        high, medium = np.quantile(s, [1.0 - high_share, 1.0 - medium_share], method="higher")
        return cls(float(high), float(medium), high_share, medium_share)

    def expr(self, raw: str = "raw_score") -> pl.Expr:
        """Polars expression giving the band label (String) of column ``raw``."""
        s = pl.col(raw)
        return (pl.when(s >= self.high_threshold).then(pl.lit("high"))
                .when(s >= self.medium_threshold).then(pl.lit("medium"))
                .otherwise(pl.lit("low")))

    def to_json(self) -> dict[str, Any]:
        return {"high_threshold": self.high_threshold, "medium_threshold": self.medium_threshold,
                "high_share": self.high_share, "medium_share": self.medium_share,
                "basis": "raw pipeline score of the training-window claims"}

    @classmethod
    def from_json(cls, blob: dict[str, Any]) -> Bands:
        return cls(float(blob["high_threshold"]), float(blob["medium_threshold"]),
                   float(blob["high_share"]), float(blob["medium_share"]))
