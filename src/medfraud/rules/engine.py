"""Evaluate a rule catalogue over a dataset (or in-memory tables) in one vectorised pass.

Every enabled rule becomes one lazy query; the claims and drug lines every rule reads are
materialised once (:class:`~medfraud.rules.inputs.RuleInputs`) and the queries run one
after another, so only one rule's intermediate frames are in memory at a time.  Above
:data:`CLAIMS_PER_PARTITION` claims the patient-local kinds run partition by partition
(patient hash) over a one-pass split of claims, lines and patients, and the few kinds that
compare across patients run lazily over the whole window.  The result is a long *hits* frame, one
row per (rule, hit id).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import uuid
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from medfraud.dataset import Dataset
from medfraud.partitions import (
    ROSTER_COLUMN,
    ROW_COLUMN,
    PatientPartitions,
    service_dates,
    sort_by_column,
    split_by_patient,
)
from medfraud.rules.catalogue import (
    RESULT_CLASSES,
    STAGES,
    Rule,
    RuleCatalogue,
    load_catalogue,
)
from medfraud.rules.inputs import SMALL_INPUT_OPTIMIZATIONS, RuleInputs, combine_drug_sales
from medfraud.rules.registry import KINDS
from medfraud.schema import LEVEL_ID, LEVELS


class _HitsLayout:
    """Column name -> dtype of one catalogue's hits (:func:`hits_schema`).  One instance per
    catalogue content (:func:`_layout` caches them), hashed by identity: the per-rule
    expressions are cached by layout (:func:`_hit_columns`) and a scoring call must not
    rebuild or rehash the Enums."""

    def __init__(self, dtypes: dict[str, pl.DataType]) -> None:
        self.dtypes = dtypes


def _layout(catalogue: RuleCatalogue) -> _HitsLayout:
    rules = catalogue.rules
    return _layout_of(tuple(r.id for r in rules), tuple(r.kind for r in rules),
                      tuple(r.reason_code for r in rules))


@functools.lru_cache(maxsize=64)
def _layout_of(rule_ids: tuple[str, ...], kinds: tuple[str, ...],
               reason_codes: tuple[str, ...]) -> _HitsLayout:
    def enum(values) -> pl.Enum:
        return pl.Enum(sorted(set(values)))

    return _HitsLayout({
        "level": enum(LEVELS), "id": pl.String, "rule_id": enum(rule_ids),
        "kind": enum(kinds), "reason_code": enum(reason_codes), "severity": pl.Int8,
        "stage": enum(STAGES), "result_class": enum(RESULT_CLASSES),
        "amount_at_stake": pl.Float64,
    })


def hits_schema(catalogue: RuleCatalogue | None = None) -> dict[str, pl.DataType]:
    """Column name -> dtype of the hits of ``catalogue`` (default :func:`load_catalogue` ()).

    The columns a rule repeats on every hit (level, rule_id, kind, reason_code, stage,
    result_class) are ``pl.Enum`` over the values the catalogue's rules can give, enabled
    or not: one byte per hit (hits can outnumber claims: 17M at 10M claims, ~0.5 GiB in
    this layout, ~1.2 GiB with strings).  Their categories are sorted, so they sort
    lexically like strings; they compare with strings, and string functions take
    ``.cat.*`` or a cast.  Hits of two catalogues with different rules have different
    dtypes: cast these columns to String to concatenate them.
    """
    return dict(_layout(catalogue if catalogue is not None else load_catalogue()).dtypes)


def empty_hits(catalogue: RuleCatalogue | None = None) -> pl.DataFrame:
    """A hits frame with no rows (schema :func:`hits_schema` of ``catalogue``)."""
    return pl.DataFrame(schema=hits_schema(catalogue))


def _check_window(window: tuple[date, date] | None) -> tuple[date | None, date | None]:
    if window is None:
        return None, None
    start, end = window
    if start is not None and end is not None and start > end:
        raise ValueError(f"window start {start} is after its end {end}")
    return start, end


# Kinds whose hits on a claim depend only on the claims (and lines) of the same patient plus
# reference tables, or on a small statistic of the whole window computed once for every
# partition (RuleInputs.population: a doctor's facilities per day): they are judged patient
# partition by patient partition, so memory is bounded by a partition's claims and lines
# instead of the dataset's.  The others compare a claim with other patients' claims (a
# diagnosis's DRG weights, a pharmacy's stock) and run once over the whole window, lazily.
PATIENT_LOCAL_KINDS = frozenset({
    "sex_restriction", "age_restriction", "indication_restriction",
    "facility_level_restriction", "care_setting_restriction", "course_limit",
    "dose_over_label", "quantity_over_days_limit", "overlapping_refill", "duplicate_charge",
    "frequency_limit", "readmission", "overlapping_stays", "outpatient_during_stay",
    "idle_stay", "service_after_death", "implausible_identity", "card_frequency",
    "same_day_distant_regions", "doctor_off_duty",
})
# Cross-patient kinds reading RuleInputs.drug_sales: in partitioned runs the sales are
# summed partition by partition (from the lines each partition joins with its claims
# anyway) instead of joining every line of the window with its claim once more.
DRUG_SALES_KINDS = frozenset({"inventory_mismatch"})
# Claims per patient partition (by patient_id hash) when evaluating patient-local kinds.
CLAIMS_PER_PARTITION = 500_000
# Up to this many claims (history included), all rules are collected in one call: on a
# 300k-claim scoring batch that costs ~0.1 GiB more than one rule at a time, for ~20 % less
# time (fixed per-query costs shared, rules run side by side on the cores).
COLLECT_TOGETHER_BELOW = 500_000
# Up to this many claims (a scoring call), more intermediate frames are materialised once
# and shared by the rules (RuleInputs.small): every line with its claim context, saving a
# join per rule reading lines, and the window's claims (larger inputs keep them lazy); the
# queries get polars' pushdowns only (inputs.SMALL_INPUT_OPTIMIZATIONS).
SMALL_INPUT_CLAIMS = 20_000
# Up to this many hits in all, the rules' hits are concatenated and sorted at once (a
# scoring call's handful) rather than rule by rule (see evaluate_tables).
SORT_TOGETHER_BELOW = 50_000


def _claim_hits(rule: Rule, inputs: RuleInputs) -> pl.LazyFrame:
    """Hits of the rule's kind, window-filtered: ``claim_id, service_date, amount_at_stake``
    for claim kinds, ``<level id>, amount_at_stake`` for entity kinds."""
    kind = KINDS[rule.kind]
    hits = kind.function(inputs, rule.parsed_params())
    if kind.level == "claim" and (inputs.start is not None or inputs.end is not None):
        hits = hits.filter(service_dates(inputs.start, inputs.end))
    return hits


def _finish(rule: Rule, hits: pl.LazyFrame, inputs: RuleInputs,
            layout: _HitsLayout) -> pl.LazyFrame:
    """Hits of ``_claim_hits`` in the ``layout`` at the rule's level."""
    if KINDS[rule.kind].level == "claim" and rule.level != "claim":
        # Entity rules built from claim kinds: the entity of each hit claim, amounts summed.
        owner = LEVEL_ID[rule.level]
        hits = (hits.join(inputs.table("claims").select("claim_id", owner), on="claim_id",
                          how="inner")
                .filter(pl.col(owner).is_not_null())
                .group_by(owner).agg(pl.col("amount_at_stake").sum()))
    return hits.select(_hit_columns(rule.level, rule.id, rule.kind, rule.reason_code,
                                    rule.severity, rule.stage, rule.result_class, layout))


@functools.lru_cache(maxsize=1024)
def _hit_columns(level: str, rule_id: str, kind: str, reason_code: str, severity: int,
                 stage: str, result_class: str, layout: _HitsLayout) -> tuple[pl.Expr, ...]:
    """The expressions of a rule's hits in ``layout``.  Cached: building ~10 expressions
    per rule is a measurable part of a call scoring a handful of claims."""
    dtype = layout.dtypes
    return (
        pl.lit(level, dtype["level"]).alias("level"),
        pl.col(LEVEL_ID[level]).cast(pl.String).alias("id"),
        pl.lit(rule_id, dtype["rule_id"]).alias("rule_id"),
        pl.lit(kind, dtype["kind"]).alias("kind"),
        pl.lit(reason_code, dtype["reason_code"]).alias("reason_code"),
        pl.lit(severity, pl.Int8).alias("severity"),
        pl.lit(stage, dtype["stage"]).alias("stage"),
        pl.lit(result_class, dtype["result_class"]).alias("result_class"),
        pl.col("amount_at_stake").cast(pl.Float64).fill_null(0.0).round(2),
    )


def _rule_query(rule: Rule, inputs: RuleInputs, layout: _HitsLayout) -> pl.LazyFrame:
    """Hits of one rule as ``layout`` rows at the rule's level."""
    return _finish(rule, _claim_hits(rule, inputs), inputs, layout)


def _evaluate(rules: list[Rule], lazy: Mapping[str, pl.LazyFrame], start: date | None,
              end: date | None, layout: _HitsLayout, claim_copies: bool = False,
              partitions: PatientPartitions | None = None) -> list[pl.DataFrame]:
    """Hits frames of ``rules`` (all of whose tables are in ``lazy``) in ``layout``."""
    local = [r for r in rules if r.kind in PATIENT_LOCAL_KINDS]
    if local and partitions is not None and partitions.covers(None, end):
        return _evaluate_partitioned(rules, lazy, start, end, layout, claim_copies,
                                     partitions)
    n_claims = lazy["claims"].select(pl.len()).collect(engine="in-memory").item()
    if local and n_claims > CLAIMS_PER_PARTITION:
        # History before the window is context of the patient-local kinds: split from the
        # first claim.
        with split_by_patient(lazy, end=end, claims_per_partition=CLAIMS_PER_PARTITION,
                              roster="duty_roster" in lazy) as own:
            if own is not None:
                return _evaluate_partitioned(rules, lazy, start, end, layout, claim_copies,
                                             own)
    # The shared inputs are materialised once (RuleInputs).  Inputs up to
    # COLLECT_TOGETHER_BELOW claims run every rule's query in one parallel collect on the
    # in-memory engine (on a few claims the streaming engine's fixed cost per query is half
    # the call); larger ones run one rule at a time, since running the queries together
    # holds every rule's intermediate frames at once.
    if n_claims <= COLLECT_TOGETHER_BELOW:
        small = n_claims <= SMALL_INPUT_CLAIMS
        # Lines indexed by claim row above a scoring call's size only: on a few hundred
        # lines its eager steps cost ~1 ms more than the joins they replace.
        inputs = RuleInputs(lazy, start, end, engine="in-memory", small=small,
                            index_lines=not small, claim_copies=claim_copies)
        return pl.collect_all([_rule_query(rule, inputs, layout) for rule in rules],
                              engine="in-memory",
                              optimizations=(SMALL_INPUT_OPTIMIZATIONS if small
                                             else pl.QueryOptFlags()))
    inputs = RuleInputs(lazy, start, end, claim_copies=claim_copies)
    return [_rule_query(rule, inputs, layout).collect() for rule in rules]


def _evaluate_partitioned(rules: list[Rule], lazy: Mapping[str, pl.LazyFrame],
                          start: date | None, end: date | None,
                          layout: _HitsLayout, claim_copies: bool,
                          partitions: PatientPartitions) -> list[pl.DataFrame]:
    """:func:`_evaluate` with the patient-local kinds judged partition by partition and the
    others once over the whole window (lazily)."""
    local = [r for r in rules if r.kind in PATIENT_LOCAL_KINDS]
    cross = [r for r in rules if r.kind not in PATIENT_LOCAL_KINDS]
    sales_parts = [] if any(r.kind in DRUG_SALES_KINDS for r in cross) else None
    hits: dict[str, list[pl.DataFrame]] = {rule.id: [] for rule in local}
    population = RuleInputs(lazy, start, end, memoize=False, claim_copies=claim_copies)
    roster_column = ROSTER_COLUMN if partitions.with_roster else None
    for part in partitions.parts:
        # Tables the rules read, the partition's rows in place of the whole table's.
        split = {name: frame for name, frame in part.items() if name in lazy}
        split["claims"] = split["claims"].drop(ROW_COLUMN)
        inputs = RuleInputs({**lazy, **split}, start, end, claim_copies=claim_copies,
                            roster_column=roster_column, population=population)
        for rule in local:
            # The claim kinds' service_date served the window filter: 17M dates at 10M
            # claims are not kept through the loop.
            hits[rule.id].append(_claim_hits(rule, inputs).drop("service_date", strict=False)
                                 .collect())
        if sales_parts is not None:
            sales_parts.append(inputs.drug_sales().collect())
    precomputed = {} if not sales_parts else {"drug_sales": combine_drug_sales(sales_parts)}
    whole = dataclasses.replace(population, precomputed=precomputed)
    frames = [_rule_query(rule, whole, layout).collect(engine="streaming") for rule in cross]
    for rule in local:
        # One rule at a time, its partitions' hits released once finished and sorted: the
        # hits of every rule (17M at 10M claims) are held once, not in three layouts.
        frames.append(_sorted_by_id(_finish(rule, pl.concat(hits.pop(rule.id)).lazy(),
                                            whole, layout).collect()))
    return frames


def _sorted_by_id(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` sorted by id, on one thread (a multithreaded string sort costs twice the
    CPU) and one column at a time (a rule's hits can number 7M): ``frame`` is emptied.
    As is when already sorted."""
    if frame.get_column("id").is_sorted():
        return frame
    return sort_by_column(frame, "id", multithreaded=False)


def evaluate_tables(tables: Mapping[str, pl.LazyFrame | pl.DataFrame],
                    catalogue: RuleCatalogue | None = None,
                    window: tuple[date, date] | None = None, *,
                    missing: Literal["raise", "skip"] = "raise",
                    claim_copies: bool = False,
                    partitions: PatientPartitions | None = None) -> pl.DataFrame:
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
    claim_copies : the claims hold copies of claims under derived ids
        (:data:`~medfraud.rules.inputs.COPY_SEPARATOR`; the scoring model's isolated
        lanes): population statistics count each original claim once.
    partitions : these tables split by patient from their first claim
        (:func:`medfraud.partitions.split_by_patient` with ``start=None``), shared with the
        claim features of the same window: the patient-local kinds read it instead of
        splitting the claims themselves, when it holds every claim up to the window end.

    Returns
    -------
    DataFrame with the columns of :func:`hits_schema` (catalogue), one row per (rule, id),
    sorted by rule_id then id.  ``amount_at_stake`` is in yuan.
    """
    catalogue = catalogue if catalogue is not None else load_catalogue()
    start, end = _check_window(window)
    lazy = {name: (frame.lazy() if isinstance(frame, pl.DataFrame) else frame)
            for name, frame in tables.items()}
    rules = []
    for rule in catalogue.enabled:
        absent = [t for t in KINDS[rule.kind].tables if t not in lazy]
        if absent:
            if missing == "skip":
                continue
            raise KeyError(f"rule {rule.id} ({rule.kind}) needs table(s) {absent}, which were "
                           f"not given; given: {sorted(lazy)}")
        rules.append(rule)
    if not rules:
        return empty_hits(catalogue)
    layout = _layout(catalogue)
    frames = _evaluate(rules, lazy, start, end, layout, claim_copies, partitions)
    if sum(frame.height for frame in frames) <= SORT_TOGETHER_BELOW:
        # (rule_id, id) is unique, so one sort of the few hits gives the same order as
        # the per-rule sorts below without their ~20 queries' fixed cost.
        return pl.concat(frames, how="vertical").sort("rule_id", "id", multithreaded=False)
    # Each frame holds one rule's hits: ordering the frames by rule id and sorting each by
    # id alone gives the rule_id, id order for a third of the CPU of sorting all hits on
    # both string columns (hits can outnumber claims).  One frame at a time, each replaced
    # by its sorted copy: sorting them side by side held every frame twice.
    frames.sort(key=lambda frame: frame["rule_id"][0] if frame.height else "")
    for i, frame in enumerate(frames):
        frames[i] = _sorted_by_id(frame)
    return pl.concat(frames, how="vertical")


def evaluate_rules(dataset: Dataset, catalogue: RuleCatalogue | None = None, *,
                   window: tuple[date, date] | None = None,
                   partitions: PatientPartitions | None = None) -> pl.DataFrame:
    """Evaluate the catalogue over a dataset folder; see :func:`evaluate_tables`.

    The dataset is assumed valid (``medfraud.schema.validate``); only the tables the
    enabled rules read are scanned, never the label tables.
    """
    catalogue = catalogue if catalogue is not None else load_catalogue()
    needed = sorted({t for rule in catalogue.enabled for t in KINDS[rule.kind].tables})
    return evaluate_tables({t: dataset.scan(t) for t in needed}, catalogue, window,
                           partitions=partitions)


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
