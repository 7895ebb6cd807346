"""The detector protocol and the registry of detector families.

Every family (rules, pyod, lightgbm, graph_tree, gnn, ring, ensemble) is one module in
this package with one :class:`Detector` subclass registered by name.  Semantics follow
PyOD and scikit-learn:

* ``__init__`` only stores parameters (``get_params`` rebuilds the detector from them);
* ``fit(features, labels=None)`` learns state kept in attributes ending in ``_``;
* ``score(features)`` depends only on that fitted state and the data given (never on
  the training data, PyOD issue #401) and returns a frame with columns ``id`` (String),
  ``score`` (Float64, higher = more suspicious) and ``reasons`` (List[String], most
  important first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import polars as pl

from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels
from medfraud.schema import LEVELS

SCORE_SCHEMA = {"id": pl.String, "score": pl.Float64, "reasons": pl.List(pl.String)}


class NotFittedError(RuntimeError):
    """``score`` was called before ``fit``."""


class Detector(ABC):
    """Base class of every detector family.

    Parameters
    ----------
    level : the level scored: claim, patient, doctor, pharmacy or facility.
    """

    family: ClassVar[str] = ""
    supervised: ClassVar[bool] = False

    def __init__(self, level: str = "claim", **params: Any):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.level = level
        self.params = params

    @property
    def name(self) -> str:
        return f"{self.family}@{self.level}"

    @property
    def learns_labels(self) -> bool:
        """Whether :meth:`fit` learns from labels (default: the family is ``supervised``).

        Such a detector learns only the labels of the rows its FeatureSet keeps at its
        level: a tabular family fits on those rows, a graph family (whose graph keeps
        every node) leaves the others unlabelled.  The stacked ensemble relies on this to
        score each of its training rows with a copy that did not see that row's label.
        """
        return self.supervised

    def get_params(self) -> dict[str, Any]:
        return {"level": self.level, **self.params}

    @abstractmethod
    def fit(self, features: FeatureSet, labels: Labels | None = None) -> Detector: ...

    @abstractmethod
    def score(self, features: FeatureSet) -> pl.DataFrame: ...

    def prepare_scoring(self) -> None:
        """Build now what :meth:`score` would otherwise build on its first call (a service
        calls this at start-up, so no request pays for it).  Default: nothing."""

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(f"{self.name} is not fitted; call fit() first")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


REGISTRY: dict[str, type[Detector]] = {}


def register(family: str):
    """Class decorator adding a detector family to :data:`REGISTRY` under ``family``."""

    def deco(cls: type[Detector]) -> type[Detector]:
        cls.family = family
        REGISTRY[family] = cls
        return cls

    return deco


def make_detector(family: str, **params: Any) -> Detector:
    """Build a detector from its family name and config parameters."""
    from medfraud import detectors  # noqa: F401  (imports every family module)

    if family not in REGISTRY:
        raise KeyError(f"unknown detector family {family!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[family](**params)


def score_frame(ids: pl.Series, scores, reasons: list[list[str]] | pl.Series | None = None) -> pl.DataFrame:
    """Assemble the standard score frame (id, score, reasons) from aligned arrays."""
    n = len(ids)
    if reasons is None:
        reasons = pl.Series("reasons", [[] for _ in range(n)], dtype=pl.List(pl.String))
    return pl.DataFrame({"id": ids.cast(pl.String), "score": pl.Series(scores, dtype=pl.Float64),
                         "reasons": reasons}, schema=SCORE_SCHEMA)
