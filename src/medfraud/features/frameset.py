"""The :class:`FeatureSet`: what every detector takes.

Features are computed by :func:`medfraud.features.build_features` (one module per
family in this package).  A FeatureSet holds one polars frame per level with the
level's id column (``medfraud.schema.LEVEL_ID``), the numeric feature columns listed in
``columns[level]``, and context columns a detector may use but must not learn from
(for claims: patient_id, doctor_id, facility_id, pharmacy_id, service_date,
total_amount, fund_paid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from medfraud.schema import LEVEL_ID


@dataclass
class FeatureSet:
    """Feature frames by level.

    Attributes
    ----------
    frames : level -> DataFrame, one row per entity (or claim) seen in ``window``.
    columns : level -> names of the numeric feature columns of that frame.
    window : (first, last) service date the features were computed over, inclusive.
    rule_hits : audit-rule hits over the same window (see ``medfraud.rules``), or None.
    graph : a ``medfraud.graph`` graph over the same window, or None until built.
    """

    frames: dict[str, pl.DataFrame]
    columns: dict[str, list[str]]
    window: tuple[date, date] | None = None
    rule_hits: pl.DataFrame | None = None
    graph: Any | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> list[str]:
        return list(self.frames)

    def frame(self, level: str) -> pl.DataFrame:
        if level not in self.frames:
            raise KeyError(f"no features at level {level!r}; available: {self.levels}")
        return self.frames[level]

    def ids(self, level: str) -> pl.Series:
        """Ids of the rows of ``level``, shape (n,)."""
        return self.frame(level)[LEVEL_ID[level]]

    def matrix(self, level: str, columns: list[str] | None = None) -> np.ndarray:
        """Feature matrix of ``level``, shape (n, d), float64 with NaN for missing values."""
        cols = columns if columns is not None else self.columns[level]
        # One select casting in place (a select then a cast is two queries: on a REST call's
        # few rows the second one doubled the cost).
        return self.frame(level).select(pl.col(cols).cast(pl.Float64)).to_numpy()
