"""Shared pieces of the feature families: parameters, table access, robust statistics.

Only the contract's data tables are reachable through :class:`Tables`; the label tables
(``labels_claims``, ``labels_entities``, ``audited``) are deliberately absent so no
feature can read them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

import polars as pl

from medfraud.dataset import Dataset
from medfraud.schema import LABEL_TABLES

Window = tuple[date, date] | None

# 1.4826 * MAD estimates the standard deviation of a normal sample; 1.2533 * mean absolute
# deviation does the same and serves as fallback when more than half the group is identical.
MAD_SCALE = 1.4826
MEANAD_SCALE = 1.2533

DATA_TABLES = ("patients", "facilities", "doctors", "pharmacies", "drugs", "claims",
               "claim_lines", "prescriptions", "pharmacy_purchases", "duty_roster")
# The tables the current feature families read (prescriptions duplicate the pharmacy claims'
# doctor/pharmacy pairs and are not needed).
USED_TABLES = tuple(t for t in DATA_TABLES if t != "prescriptions")
assert not set(DATA_TABLES) & set(LABEL_TABLES)


@dataclass(frozen=True)
class FeatureParams:
    """Thresholds of the feature definitions (policy defaults from DOMAIN.md).

    Attributes
    ----------
    days_supply_limit_ordinary : days of supply allowed for an ordinary prescription (7).
    days_supply_limit_chronic : days allowed for a chronic-disease patient (84 = 12 weeks).
    days_supply_limit_emergency : days allowed when the doctor's department is an emergency
        department (3).
    emergency_departments : department names counted as emergency (lower-cased match).
    readmission_days : a readmission for the same diagnosis within this many days counts (15).
    gap_cap_days : value given to "days since previous event" when there is none (365).
    high_value_quantile : drugs whose catalogue unit_price is above this quantile are
        "high value" (0.9).
    night_hours : settlement hours counted as night, [start, end) wrapping midnight (22, 6).
    max_doctors_per_patient : patients seeing more doctors than this are left out of the
        shared-patient pairs (hubs would add O(k^2) pairs and carry no ring signal).
    """

    days_supply_limit_ordinary: int = 7
    days_supply_limit_chronic: int = 84
    days_supply_limit_emergency: int = 3
    emergency_departments: tuple[str, ...] = ("emergency", "急诊", "急诊科")
    readmission_days: int = 15
    gap_cap_days: int = 365
    high_value_quantile: float = 0.9
    night_hours: tuple[int, int] = (22, 6)
    max_doctors_per_patient: int = 50


class Tables:
    """Lazy access to the data tables of a dataset; the label tables are not reachable."""

    def __init__(self, dataset: Dataset):
        self._dataset = dataset
        missing = [t for t in USED_TABLES if not dataset.has(t)]
        if missing:
            raise FileNotFoundError(f"{dataset.path}: feature building needs table(s) {missing}, "
                                    "which are absent")

    def __getattr__(self, table: str) -> pl.LazyFrame:
        if table not in DATA_TABLES:
            raise AttributeError(f"{table!r} is not a data table features may read")
        return self._dataset.scan(table)


def in_window(column: str, window: Window) -> pl.Expr:
    """True for rows whose ``column`` (Date) lies in ``window`` (inclusive); all rows if None."""
    if window is None:
        return pl.lit(True)
    return pl.col(column).is_between(pl.lit(window[0]), pl.lit(window[1]), closed="both")


def check_window(window: Window, name: str = "window") -> None:
    """Raise a clear error for a malformed window."""
    if window is None:
        return
    if len(window) != 2 or not all(isinstance(d, date) for d in window):
        raise TypeError(f"{name} must be a (date, date) pair, got {window!r}")
    if window[0] > window[1]:
        raise ValueError(f"{name} starts after it ends: {window[0]} > {window[1]}")


def robust_stats(frame: pl.LazyFrame, keys: list[str], value: str, prefix: str) -> pl.LazyFrame:
    """Per-group median and robust scale of ``value`` (nulls ignored).

    Returns
    -------
    LazyFrame with ``keys``, ``{prefix}_med`` and ``{prefix}_scale`` (Float64; scale is
    1.4826·MAD, or 1.2533·mean absolute deviation when MAD is 0, or null when every value
    is equal).  With ``keys`` empty, one row of global statistics.

    Notes
    -----
    By group, the median is joined back to the rows and the deviations reduced by a second
    group-by: two plain aggregations (polars' fast path) instead of one nested expression
    ``(x - x.median()).abs().median()`` evaluated group by group, about twice as fast on
    the claim-level peer groups (thousands of groups, millions of rows).
    """
    x = pl.col(value)
    base = frame.filter(x.is_not_null())

    def scale(mad: pl.Expr, meanad: pl.Expr) -> pl.Expr:
        return (pl.when(mad > 0).then(MAD_SCALE * mad)
                .when(meanad > 0).then(MEANAD_SCALE * meanad)
                .otherwise(None).alias(f"{prefix}_scale"))

    if not keys:
        # The median broadcast once as a column: written inline, ``x.median()`` was
        # evaluated for every expression using it (3x the CPU on 14M values, polars 2.1).
        med, deviation = pl.col("_med"), pl.col("_dev")
        return (base.select(x, x.median().alias("_med"))
                .select(med, (x - med).abs().alias("_dev"))
                .select(med.first().alias(f"{prefix}_med"),
                        scale(deviation.median(), deviation.mean())))
    medians = base.group_by(keys).agg(x.median().alias("_med"))
    spread = (
        base.select(*keys, value)
        .join(medians, on=keys, how="left", nulls_equal=True)
        .select(*keys, (x - pl.col("_med")).abs().alias("_dev"))
        .group_by(keys).agg(pl.col("_dev").median().alias("_mad"),
                            pl.col("_dev").mean().alias("_meanad"))
    )
    return medians.join(spread, on=keys, how="left", nulls_equal=True).select(
        *keys, pl.col("_med").alias(f"{prefix}_med"), scale(pl.col("_mad"), pl.col("_meanad")))


def peer_stats(reference: pl.LazyFrame, keys: list[str], value: str,
               prefix: str) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Group and global statistics of ``value`` on ``reference`` for :func:`apply_peer_stats`.

    Returns
    -------
    (group, overall): :func:`robust_stats` by ``keys`` with ``prefix``, and its one-row
    global counterpart with prefix ``_g``.  Collect them once and reuse them when the
    frame to describe is processed in partitions.
    """
    return robust_stats(reference, keys, value, prefix), robust_stats(reference, [], value, "_g")


def apply_peer_stats(frame: pl.LazyFrame, group: pl.LazyFrame,
                     overall: pl.LazyFrame | pl.DataFrame, keys: list[str], value: str,
                     prefix: str) -> pl.LazyFrame:
    """Add ``{prefix}_ratio`` and ``{prefix}_z`` to ``frame`` from statistics computed by
    :func:`peer_stats` (same ``keys``, ``value`` and ``prefix``); see :func:`attach_peer_stats`.

    ``overall`` collected (a one-row DataFrame) enters the expressions as literals instead
    of a cross join: one plan node fewer per statistic, which is most of the cost on tiny
    frames (scoring a few claims).
    """
    joined = frame.join(group, on=keys, how="left", nulls_equal=True)
    if isinstance(overall, pl.DataFrame):
        ratio_z, helpers = _peer_exprs(value, prefix, overall.item(0, "_g_med"),
                                       overall.item(0, "_g_scale"))
    else:
        ratio_z, helpers = _peer_exprs(value, prefix, None, None, literal=False)
        joined = joined.join(overall, how="cross")
    return joined.with_columns(ratio_z).drop(helpers)


@functools.lru_cache(maxsize=256)
def _peer_exprs(value: str, prefix: str, g_med: float | None, g_scale: float | None,
                literal: bool = True) -> tuple[tuple[pl.Expr, ...], tuple[str, ...]]:
    """Expressions of :func:`apply_peer_stats`: (ratio and z, helper columns to drop).

    Cached: a scoring call of a few claims spends as much time building polars expressions
    as running them, and the global statistics of a fitted reference repeat from call to
    call (expressions are immutable, so sharing them across plans is safe).  The group's
    statistics with their global fallback are inlined in both expressions (one plan node
    instead of two: each node and expression is a fixed cost on a few claims; on many,
    common-subexpression elimination evaluates them once).
    """
    med, scale = f"{prefix}_med", f"{prefix}_scale"
    x = pl.col(value)
    if literal:
        g_med_e, g_scale_e = pl.lit(g_med, pl.Float64), pl.lit(g_scale, pl.Float64)
        helpers: tuple[str, ...] = (med, scale)
    else:
        g_med_e, g_scale_e = pl.col("_g_med"), pl.col("_g_scale")
        helpers = (med, scale, "_g_med", "_g_scale")
    med_e = pl.coalesce(med, g_med_e)
    scale_e = pl.when(pl.col(med).is_null()).then(g_scale_e).otherwise(pl.col(scale))
    ratio_z = (
        pl.when(x.is_not_null() & (med_e > 0)).then(x / med_e).otherwise(1.0)
        .alias(f"{prefix}_ratio"),
        pl.when(x.is_not_null() & scale_e.is_not_null())
        .then((x - med_e) / scale_e).otherwise(0.0).alias(f"{prefix}_z"),
    )
    return ratio_z, helpers


def attach_peer_stats(frame: pl.LazyFrame, reference: pl.LazyFrame, keys: list[str], value: str,
                      prefix: str) -> pl.LazyFrame:
    """Add ``{prefix}_ratio`` (value / peer median) and ``{prefix}_z`` (robust z) to ``frame``.

    Statistics are fitted on ``reference`` only.  A group unseen in ``reference`` falls back
    to the reference's global statistics; a null ``value`` (feature not applicable) gets the
    neutral ratio 1 and z 0, so the columns never hold nulls.
    """
    group, overall = peer_stats(reference, keys, value, prefix)
    return apply_peer_stats(frame, group, overall, keys, value, prefix)


def days_between(later: str | pl.Expr, earlier: str | pl.Expr) -> pl.Expr:
    """Whole days from ``earlier`` to ``later`` (Date columns), Int64."""
    later = pl.col(later) if isinstance(later, str) else later
    earlier = pl.col(earlier) if isinstance(earlier, str) else earlier
    return (later - earlier).dt.total_days()


def as_float(columns: list[str]) -> list[pl.Expr]:
    return [pl.col(c).cast(pl.Float64) for c in columns]
