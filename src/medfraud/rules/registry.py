"""The registry of rule *kinds*: vectorised functions a catalogue rule points at.

A kind is a function ``(inputs, params) -> LazyFrame`` registered with
:func:`register_kind`.  It declares the tables it reads, the level its hits live at
(``claim`` for almost all, ``pharmacy`` for stock reconciliation) and a pydantic model
of its parameters (``extra="forbid"``, defaults are the policy thresholds).

Claim-level kinds return one row per hit claim with columns ``claim_id`` (String),
``service_date`` (Date, used by the engine to keep only claims inside the window) and
``amount_at_stake`` (Float64, yuan).  Entity-level kinds return ``<level>_id`` and
``amount_at_stake``; they apply the window themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
from pydantic import BaseModel, ConfigDict

from medfraud.schema import LABEL_TABLES, LEVELS, TABLES


class KindParams(BaseModel):
    """Base of every kind's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Kind:
    """A registered rule kind.

    Attributes
    ----------
    name : the ``kind`` value used in the catalogue.
    function : ``(RuleInputs, params) -> LazyFrame`` of hits at ``level``.
    level : the level of the hits the function returns.
    tables : contract tables the function reads (never a label table).
    params : the pydantic model validating the rule's ``params``.
    """

    name: str
    function: Callable[..., pl.LazyFrame]
    level: str
    tables: tuple[str, ...]
    params: type[KindParams]


KINDS: dict[str, Kind] = {}


def register_kind(name: str, *, tables: tuple[str, ...], params: type[KindParams],
                  level: str = "claim"):
    """Function decorator adding a rule kind to :data:`KINDS`."""
    if level not in LEVELS:
        raise ValueError(f"kind {name!r}: level must be one of {LEVELS}, got {level!r}")
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"kind {name!r} reads unknown table(s) {unknown}")
    # Rules are a detector input: reading ground truth would leak it into every score.
    leaked = [t for t in tables if t in LABEL_TABLES]
    if leaked:
        raise ValueError(f"kind {name!r} must not read label table(s) {leaked}")

    def deco(function: Callable[..., pl.LazyFrame]) -> Callable[..., pl.LazyFrame]:
        if name in KINDS:
            raise ValueError(f"rule kind {name!r} is registered twice")
        KINDS[name] = Kind(name, function, level, tables, params)
        return function

    return deco
