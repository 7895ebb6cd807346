"""Evaluate a rule catalogue over a dataset (or in-memory tables) in one vectorised pass.

Every enabled rule becomes one lazy query; :func:`polars.collect_all` runs them together
so shared scans and joins are computed once.  The result is a long *hits* frame, one
row per (rule, hit id).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from medfraud.dataset import Dataset
from medfraud.rules.catalogue import Rule, RuleCatalogue, load_catalogue
from medfraud.rules.inputs import RuleInputs
from medfraud.rules.registry import KINDS
from medfraud.schema import LEVEL_ID

HITS_SCHEMA = {
    "level": pl.String, "id": pl.String, "rule_id": pl.String, "kind": pl.String,
    "reason_code": pl.String, "severity": pl.Int8, "stage": pl.String,
    "result_class": pl.String, "amount_at_stake": pl.Float64,
}


def empty_hits() -> pl.DataFrame:
    """A hits frame with no rows (schema :data:`HITS_SCHEMA`)."""
    return pl.DataFrame(schema=HITS_SCHEMA)


def _check_window(window: tuple[date, date] | None) -> tuple[date | None, date | None]:
    if window is None:
        return None, None
    start, end = window
    if start is not None and end is not None and start > end:
        raise ValueError(f"window start {start} is after its end {end}")
    return start, end


def _rule_query(rule: Rule, inputs: RuleInputs) -> pl.LazyFrame:
    """Hits of one rule as ``id, amount_at_stake`` at the rule's level."""
    kind = KINDS[rule.kind]
    hits = kind.function(inputs, rule.parsed_params())
    if kind.level == "claim":
        if inputs.start is not None:
            hits = hits.filter(pl.col("service_date") >= inputs.start)
        if inputs.end is not None:
            hits = hits.filter(pl.col("service_date") <= inputs.end)
        if rule.level != "claim":
            # Entity rules built from claim kinds: the entity of each hit claim, amounts summed.
            owner = LEVEL_ID[rule.level]
            hits = (hits.join(inputs.claims(["claim_id", owner]), on="claim_id", how="inner")
                    .filter(pl.col(owner).is_not_null())
                    .group_by(owner).agg(pl.col("amount_at_stake").sum()))
    id_col = LEVEL_ID[rule.level]
    return hits.select(
        pl.lit(rule.level, pl.String).alias("level"),
        pl.col(id_col).cast(pl.String).alias("id"),
        pl.lit(rule.id, pl.String).alias("rule_id"),
        pl.lit(rule.kind, pl.String).alias("kind"),
        pl.lit(rule.reason_code, pl.String).alias("reason_code"),
        pl.lit(rule.severity, pl.Int8).alias("severity"),
        pl.lit(rule.stage, pl.String).alias("stage"),
        pl.lit(rule.result_class, pl.String).alias("result_class"),
        pl.col("amount_at_stake").cast(pl.Float64).fill_null(0.0).round(2),
    )


def evaluate_tables(tables: Mapping[str, pl.LazyFrame | pl.DataFrame],
                    catalogue: RuleCatalogue | None = None,
                    window: tuple[date, date] | None = None, *,
                    missing: Literal["raise", "skip"] = "raise") -> pl.DataFrame:
    """Evaluate every enabled rule over contract tables held in memory or lazily.

    Parameters
    ----------
    tables : table name -> LazyFrame (or DataFrame) in the contract's schema.  Only the
        tables the enabled rules need are read; label tables are never read.
    catalogue : the rules; default :func:`load_catalogue` ().
    window : (first, last) service date, inclusive.  Claims outside it are not judged;
        history before the start is used as context, nothing after the end is read.
    missing : a rule needing a table absent from ``tables``: ``"raise"`` a KeyError
        naming rule and tables, or ``"skip"`` the rule (e.g. scoring one claim without
        the pharmacy's purchase history).

    Returns
    -------
    DataFrame with columns of :data:`HITS_SCHEMA`, one row per (rule, id), sorted by
    rule_id then id.  ``amount_at_stake`` is in yuan.
    """
    catalogue = catalogue if catalogue is not None else load_catalogue()
    start, end = _check_window(window)
    lazy = {name: (frame.lazy() if isinstance(frame, pl.DataFrame) else frame)
            for name, frame in tables.items()}
    inputs = RuleInputs(lazy, start, end)
    queries = []
    for rule in catalogue.enabled:
        absent = [t for t in KINDS[rule.kind].tables if t not in lazy]
        if absent:
            if missing == "skip":
                continue
            raise KeyError(f"rule {rule.id} ({rule.kind}) needs table(s) {absent}, which were "
                           f"not given; given: {sorted(lazy)}")
        queries.append(_rule_query(rule, inputs))
    if not queries:
        return empty_hits()
    frames = pl.collect_all(queries)
    return pl.concat(frames, how="vertical").sort("rule_id", "id")


def evaluate_rules(dataset: Dataset, catalogue: RuleCatalogue | None = None, *,
                   window: tuple[date, date] | None = None) -> pl.DataFrame:
    """Evaluate the catalogue over a dataset folder; see :func:`evaluate_tables`.

    The dataset is assumed valid (``medfraud.schema.validate``); only the tables the
    enabled rules read are scanned, never the label tables.
    """
    catalogue = catalogue if catalogue is not None else load_catalogue()
    needed = sorted({t for rule in catalogue.enabled for t in KINDS[rule.kind].tables})
    return evaluate_tables({t: dataset.scan(t) for t in needed}, catalogue, window)


def summarise(hits: pl.DataFrame) -> pl.DataFrame:
    """Per rule: number of hits, distinct ids hit and total amount at stake.

    Parameters
    ----------
    hits : frame returned by :func:`evaluate_rules`.

    Returns
    -------
    DataFrame with rule_id, kind, reason_code, level, severity, stage, result_class,
    hits (UInt32), distinct_ids (UInt32), amount_at_stake (Float64, yuan), sorted by
    rule_id.
    """
    return (hits.group_by("rule_id", "kind", "reason_code", "level", "severity", "stage",
                          "result_class")
            .agg(pl.len().alias("hits"), pl.col("id").n_unique().alias("distinct_ids"),
                 pl.col("amount_at_stake").sum().round(2).alias("amount_at_stake"))
            .sort("rule_id"))


def write_hits(hits: pl.DataFrame, path: str | Path) -> Path:
    """Write hits to Parquet or CSV (by suffix) atomically: temporary file, then rename.

    Raises
    ------
    ValueError if the suffix is neither ``.parquet`` nor ``.csv``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"hits file must end in .parquet or .csv, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if suffix == ".parquet":
            hits.write_parquet(tmp)
        else:
            hits.write_csv(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
