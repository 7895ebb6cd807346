"""Ranking metrics per level and typology: AUROC, AUPRC, precision/recall/money at budget.

Keys are ``"<level>.<typology>.<metric>"`` (the tracking layer prefixes the split), with
the pseudo-typology ``all`` meaning any fraud at that level.  The key set depends only on
the level, the typologies and the budgets asked for — never on the data — so runs are
comparable: a metric that is undefined in scope (no positives, or no negatives, or no
amounts given) is ``NaN`` rather than missing.

Conventions
-----------
* Scope: the rows evaluated are ``ids_in_scope`` (e.g. the test split).  An id in scope
  without a score is ranked below every scored id (it was not flagged).
* Budget ``b``: the top ``k = ceil(b × n_in_scope)`` rows are flagged, ordered by score
  descending, ties broken by id ascending so results are deterministic.
* ``rec_at_k``: recall in the top K where K = number of positives (R-precision).
* ``money_at_<b>``: fraudulent amount among flagged rows ÷ all fraudulent amount in scope
  (amounts from ``amounts``, columns ``id`` and ``amount``, e.g. fund_paid per claim).
* Per typology ``t``, rows labelled with another typology only are left out: the question is
  how well ``t`` is separated from honest rows, and flagging other fraud is not a false
  alarm.  ``all`` keeps every row.  Budgets are then fractions of that reduced scope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

from medfraud.labels import TYPOLOGY_LEVEL, Labels
from medfraud.schema import LEVEL_ID, LEVELS, TYPOLOGIES

ALL = "all"


def budget_name(budget: float) -> str:
    """``0.01 -> "1pct"``, ``0.05 -> "5pct"``, ``0.005 -> "0.5pct"``."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"audit budget must be in (0, 1], got {budget}")
    return f"{budget * 100:g}pct"


def metric_names(budgets: Sequence[float] = (0.01, 0.05)) -> list[str]:
    """Metric names produced for each (level, typology), in a fixed order."""
    names = ["auroc", "auprc", "rec_at_k"]
    for b in budgets:
        names += [f"precision_at_{budget_name(b)}", f"recall_at_{budget_name(b)}"]
    names += [f"money_at_{budget_name(b)}" for b in budgets]
    return names


def default_typologies(level: str, labels: Labels) -> list[str]:
    """Typologies judged at ``level`` plus any with positives there, in TYPOLOGIES order."""
    if level == "claim":
        present = set(labels.claims["typology"].unique().to_list())
    else:
        present = set(labels.entities.filter(pl.col("entity_type") == level)["typology"].unique().to_list())
    known = [t for t in TYPOLOGIES if TYPOLOGY_LEVEL.get(t) == level or t in present]
    return known + sorted(present - set(TYPOLOGIES))


def ranked_in_scope(scores: pl.DataFrame, ids_in_scope: pl.Series) -> pl.DataFrame:
    """Scope ids with their score, best first.

    Returns a frame ``id`` (String), ``score`` (Float64, unscored ids get a value below
    every real score) sorted by score descending then id ascending.
    """
    for column in ("id", "score"):
        if column not in scores.columns:
            raise KeyError(f"scores frame lacks column {column!r}; has {scores.columns}")
    duplicated = scores.filter(pl.col("id").is_duplicated())
    if duplicated.height:
        raise ValueError(f"scores has {duplicated.height} rows with a duplicated id, e.g. "
                         f"{duplicated['id'][0]!r}")
    scope = ids_in_scope.cast(pl.String).alias("id").unique(maintain_order=True).to_frame()
    joined = scope.join(scores.select(pl.col("id").cast(pl.String), pl.col("score").cast(pl.Float64)),
                        on="id", how="left")
    nan_scores = joined.filter(pl.col("score").is_nan())
    if nan_scores.height:
        raise ValueError(f"scores has {nan_scores.height} NaN score(s) in scope, e.g. id "
                         f"{nan_scores['id'][0]!r}")
    floor = joined["score"].min()
    floor = (floor if floor is not None else 0.0) - 1.0
    return (joined.with_columns(pl.col("score").fill_null(floor))
            .sort(["score", "id"], descending=[True, False]))


def _metrics_one(y: np.ndarray, s: np.ndarray, money: np.ndarray | None,
                 budgets: Sequence[float]) -> dict[str, float]:
    """Metrics for one binary target ``y`` over rows already sorted best-first."""
    names = metric_names(budgets)
    n, n_pos = len(y), int(y.sum())
    if n_pos == 0 or n_pos == n:
        return dict.fromkeys(names, math.nan)
    out = {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)),
           "rec_at_k": float(y[:n_pos].sum() / n_pos)}
    hits = np.cumsum(y)
    for b in budgets:
        k = max(1, math.ceil(b * n))
        name = budget_name(b)
        out[f"precision_at_{name}"] = float(hits[k - 1] / k)
        out[f"recall_at_{name}"] = float(hits[k - 1] / n_pos)
        if money is None:
            out[f"money_at_{name}"] = math.nan
        else:
            fraud_money = np.where(y == 1, money, 0.0)
            total = fraud_money.sum()
            out[f"money_at_{name}"] = float(fraud_money[:k].sum() / total) if total > 0 else math.nan
    return {k: out[k] for k in names}


def evaluate_scores(scores: pl.DataFrame, level: str, labels: Labels, ids_in_scope: pl.Series,
                    typologies: Sequence[str] | None = None, budgets: Sequence[float] = (0.01, 0.05),
                    amounts: pl.DataFrame | None = None) -> dict[str, float]:
    """Ranking quality of ``scores`` at ``level`` for each typology and for any fraud.

    Parameters
    ----------
    scores : columns ``id`` (String) and ``score`` (Float64, higher = more suspicious).
    level : claim, patient, doctor, pharmacy or facility.
    labels : ground truth (``labels.target(level, ids, typology, source="full")``).
    ids_in_scope : ids evaluated, shape (n,), e.g. the test split at ``level``.
    typologies : typologies to report besides ``all``; default: those judged at
        ``level`` (``TYPOLOGY_LEVEL``) and any other with positives at ``level``.
    budgets : audit budgets as fractions of the rows in scope.
    amounts : columns ``id`` and ``amount`` (yuan, e.g. fund_paid per claim); without
        it the ``money_at_*`` metrics are NaN.

    Returns
    -------
    dict ``"<level>.<typology>.<metric>" -> float`` with metrics from
    :func:`metric_names`; NaN where undefined (no positives or no negatives in scope).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    ranked = ranked_in_scope(scores, ids_in_scope)
    money = None
    if amounts is not None:
        if not {"id", "amount"} <= set(amounts.columns):
            raise KeyError(f"amounts must have columns 'id' and 'amount'; has {amounts.columns}")
        money = (ranked.join(amounts.select(pl.col("id").cast(pl.String),
                                            pl.col("amount").cast(pl.Float64)).unique("id", keep="first"),
                             on="id", how="left", maintain_order="left")["amount"]
                 .fill_null(0.0).to_numpy())
    s = ranked["score"].to_numpy()
    ids = ranked["id"]
    out: dict[str, float] = {}
    chosen = list(typologies) if typologies is not None else default_typologies(level, labels)
    id_series = ids.alias(LEVEL_ID[level])
    any_fraud = labels.target(level, id_series, None, source="full").to_numpy().astype(bool)
    for typology in [ALL, *[t for t in chosen if t != ALL]]:
        if typology == ALL:
            keep = np.ones(len(any_fraud), dtype=bool)
            y = any_fraud.astype(np.int8)
        else:
            y = labels.target(level, id_series, typology, source="full").to_numpy().astype(np.int8)
            # Rows of *other* typologies are neither positives nor honest negatives here.
            keep = (y == 1) | ~any_fraud
            y = y[keep]
        metrics = _metrics_one(y, s[keep], None if money is None else money[keep], budgets)
        for name, value in metrics.items():
            out[f"{level}.{typology}.{name}"] = value
    return out
