"""Claim-level features: one row per claim in the window.

Every feature is a polars expression; inside a partition claims carry integer keys
(``_cidx``: position in claim_id order, ``_pkey`` / ``_ikey``: injective 64-bit hashes of
patient and item; with few claims ``_ikey`` is item_code itself), the line-derived features come from one sort of the lines and one
group-by (refills, duplicates, drug aggregates), readmissions from a window function with
``order_by`` (few rows).  See docs/features.md for the definition of every column.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import polars as pl
import polars.selectors as cs

from medfraud.dataset import PARTITION_SEED
from medfraud.features._common import (
    FeatureParams,
    Tables,
    Window,
    apply_peer_stats,
    days_between,
    in_window,
    robust_stats,
)
from medfraud.partitions import (
    CLAIMS_PER_PARTITION,
    ROSTER_COLUMN,
    ROW_COLUMN,
    PatientPartitions,
    claim_join_key,
    sort_by_column,
    split_by_patient,
    with_roster_facility,
)
from medfraud.schema import SETTINGS

CONTEXT_COLUMNS = ["patient_id", "doctor_id", "facility_id", "pharmacy_id", "service_date",
                   "setting", "total_amount", "fund_paid"]

CLAIM_FEATURES = [
    # amount and its peer groups
    "log_amount", "fund_share", "n_lines", "n_drug_lines",
    "amount_dx_ratio", "amount_dx_z", "amount_drg_ratio", "amount_drg_z",
    "drug_amount_ratio_max", "drug_amount_z_max", "drg_weight", "drg_weight_dx_ratio",
    "drg_weight_dx_z",
    # prescribing
    "dose_ratio_max", "days_over_limit_max", "refill_overlap_days_max", "n_refill_overlap_lines",
    "sex_restriction_hits", "age_restriction_hits", "level_restriction_hits",
    "high_value_drug_share",
    # identity and card use
    "days_after_death", "card_claims_same_day", "card_regions_same_day",
    "card_facilities_same_day", "cross_region",
    # doctor presence
    "doctor_on_duty", "doctor_roster_other_facility", "doctor_facilities_same_day",
    # stays
    "is_inpatient", "length_of_stay", "care_lines_per_bed_day", "readmission_gap_days",
    "readmitted_within_limit", "n_overlapping_stays", "during_inpatient_stay",
    "n_outpatient_during_stay",
    # duplicates
    "dup_lines_in_claim", "dup_lines_across_claims",
    # timing and setting
    "weekend", "night", "setting_outpatient", "setting_inpatient", "setting_pharmacy",
    "setting_online",
]

# Intermediate columns carried for entity aggregation (not features of the claim frame).
HELPER_COLUMNS = ["_drug_amount", "_high_value_amount", "_month"]

# Claim features are stored narrow: Float32 ratios and scores (the precision detectors
# train at: LightGBM bins, torch and the isolation forest compute in float32), UInt16
# counts and Int16 day spans, and the context column ``setting`` is an Enum of the
# contract's settings (1 byte instead of a 16-byte string view).  The claim frame is the
# largest object of a build and lives through the rules (10M claims: ~0.5 GiB less than
# with UInt32 counts, Int32 days and a String setting, which were already ~0.7 GiB less
# than Float64 / Int64); money (total_amount, fund_paid) stays Float64.  Counts saturate
# at 65 535 (lines of a claim, claims of a card on a day) and day spans at +-32 767 days
# (89 years): bounds no claim reaches, and a saturated value still ranks above every
# other.  Features are computed in 64 bits and narrowed once, at the end of each partition.
_CLAIM_FEATURE = cs.by_name(*CLAIM_FEATURES, require_all=False)
SETTING_DTYPE = pl.Enum(sorted(SETTINGS))
_NARROW_COLUMNS = (
    pl.col("setting").cast(SETTING_DTYPE),
    (_CLAIM_FEATURE & cs.by_dtype(pl.Float64)).cast(pl.Float32),
    (_CLAIM_FEATURE & cs.by_dtype(pl.Int32, pl.Int64))
    .clip(-(2 ** 15 - 1), 2 ** 15 - 1).cast(pl.Int16),
    (_CLAIM_FEATURE & cs.by_dtype(pl.UInt32, pl.UInt64)).clip(0, 2 ** 16 - 1).cast(pl.UInt16),
)


# See claim_features(each_partition=...).
PartitionCallback = Callable[[pl.DataFrame, pl.LazyFrame], None]
_PARTITION_SEED = PARTITION_SEED  # also seeds the id hashes inside a partition
# Up to this many claims a plan's execution costs less than its optimisation (a scoring call:
# 16 claims, ~40 plan nodes): only projection and predicate pushdown are kept then, and the
# line base stays inside the claim plan instead of being collected first (see
# docs/features.md, "Fixed cost of a call").
FEW_CLAIMS = 10_000


def _plan_optimizations(n_claims: int | None) -> pl.QueryOptFlags:
    """Query optimisations for a plan over ``n_claims`` claims (None: unknown, the defaults).

    On a few claims, common-subplan/subexpression elimination, expression simplification,
    join ordering and the other passes cost more than they save (16 claims: ~30 % of the
    claim plan's CPU); results are the same, only the plan's cost changes.  A fresh object
    each call: the flags are mutable.
    """
    if n_claims is None or n_claims > FEW_CLAIMS:
        return pl.QueryOptFlags()
    return pl.QueryOptFlags.none().update(projection_pushdown=True, predicate_pushdown=True)


def _claim_key(claims: pl.LazyFrame | pl.DataFrame) -> pl.Expr:
    """Join key of claim_id for joins of lines with ``claims``: its 64-bit hash (a hash
    join on integers, about half the cost of one on the strings) when the hashes of
    ``claims`` are all distinct, else claim_id itself, so joins stay exact."""
    if isinstance(claims, pl.LazyFrame):
        return claim_join_key(claims)
    # Series methods: no query plan
    distinct = claims.get_column("claim_id").hash(_PARTITION_SEED).n_unique()
    return pl.col("claim_id").hash(_PARTITION_SEED) if distinct == claims.height \
        else pl.col("claim_id")


def _claims_base(tables: Tables, window: Window) -> pl.LazyFrame:
    """Claims in ``window`` joined with the duty roster's facility of the doctor that day
    (``_roster_facility``) and the patient, doctor and facility attributes used below
    (:func:`_join_attributes`): the claim base of a window processed in one partition
    (:func:`medfraud.partitions.split_by_patient` joins the roster of larger ones).
    """
    base = with_roster_facility(tables.claims.filter(in_window("service_date", window)),
                                tables.duty_roster)
    return _join_attributes(tables, base)


def _patient_attributes(tables: Tables) -> pl.LazyFrame:
    return tables.patients.select("patient_id", "sex", "birth_date", "death_date", "chronic")


def _join_attributes(tables: Tables, claims: pl.LazyFrame,
                     patients: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """``claims`` with the patient (``patients``: :func:`_patient_attributes` rows, default
    the whole registry), doctor and facility attributes the features use.

    In a partitioned build these joins run inside each partition, on its own patients (the
    registry is split with the claims: same patient hash) and on the small doctor and
    facility tables: string joins on a partition's rows in memory cost less than in the
    streaming pass that splits the whole window, and less is written and read back.
    """
    patients = _patient_attributes(tables) if patients is None else patients
    doctors = tables.doctors.select("doctor_id", pl.col("department").str.to_lowercase()
                                    .alias("_department"))
    facilities = tables.facilities.select("facility_id", pl.col("level").alias("_fac_level"))
    return (claims.join(patients, on="patient_id", how="left")
            .join(doctors, on="doctor_id", how="left")
            .join(facilities, on="facility_id", how="left"))


def _lines_base(tables: Tables, claims: pl.DataFrame, params: FeatureParams,
                raw_lines: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Lines of ``claims`` with claim context and, for drug lines, the catalogue attributes.

    ``claims`` : a claim frame from :func:`_keyed_claims` (``_cidx``, ``_pkey``).
    ``raw_lines`` : claim_lines rows to read (default the whole table); a partition passes
    its own lines.  The line's claim_id is replaced by the claim's ``_cidx`` and ``_pkey``
    (every later group-by, sort and join of lines uses these integers).
    """
    raw_lines = tables.claim_lines if raw_lines is None else raw_lines
    price = pl.col("unit_price")
    drugs = tables.drugs.select(
        pl.col("drug_code").alias("item_code"),
        "max_daily_units", "sex_restriction", "min_age", "max_age", "restricted_level",
        # The catalogue quantile broadcast in the same select (no cross join).
        (price > price.quantile(params.high_value_quantile)).alias("_high_value"),
    )
    key = _claim_key(claims)
    context = claims.lazy().select(key.alias("_ckey"), "_cidx", "_pkey", "service_date",
                                   "sex", "birth_date", "chronic", "_department",
                                   "_fac_level")
    raw_lines = raw_lines.drop("unit_price").with_columns(key.alias("_ckey")).drop("claim_id")
    return (
        raw_lines.join(context, on="_ckey", how="inner").drop("_ckey")
        .join(drugs, on="item_code", how="left")
        .with_columns((pl.col("item_type") == "drug").alias("_is_drug"))
    )


_EAGER_SORT_LINES = 5_000


def _line_flags(lines: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """Per-line refill overlap and duplicate flags, from one sort of the lines.

    Lines are ordered by (patient, item, service date, claim, line); then

    - ``_overlap`` (drug lines; null otherwise): the previous fill of the same patient and
      drug is the nearest earlier drug line of the same (patient, item) run, and the overlap
      is ``its days_supply - days since it``, floored at 0 (0 for a first fill);
    - ``_dup_across``: the line's (patient, item_code, service_date) run holds two or more
      claims (its first and last claim differ; claims are ordered inside the run);
    - ``_dup_in``: a non-bed line whose (claim, item_code, quantity) already occurred in an
      earlier non-bed line of the claim (bed lines repeat once per day by design).

    One sort of integer keys plus shifts and fills replaces the three string-keyed
    group-bys, the join and the sort these took before.  The sort is eager: the same
    sort in a lazy query took twice as long (polars 2.1).  Needs ``_pkey``, ``_ikey``
    (injective keys of patient and item, see :func:`_injective_key`), ``_cidx`` (claim
    position in claim_id order), service_date, line_no, quantity, days_supply, ``_is_drug``
    and ``_not_bed`` (item_type is not "bed"); narrow numeric columns keep the sort cheap.
    """
    if not isinstance(lines, pl.DataFrame):
        return lines.sort(_LINE_ORDER).with_columns(_line_flag_exprs())
    # Every flag relates a line to other lines of its (patient, item): a line alone in its
    # pair (most lines: ~80 % of a scoring batch's) is a first fill with no duplicate.  Only
    # the others are sorted (a hash collision only sorts more lines); their order among
    # themselves, and so their flags, are those of the full sort.
    repeated = lines.select(pl.struct("_pkey", "_ikey").hash(_PARTITION_SEED).is_duplicated()) \
        .to_series()
    flagged = lines.filter(repeated).sort(_LINE_ORDER).with_columns(_line_flag_exprs())
    alone = lines.filter(~repeated).with_columns(
        pl.when(pl.col("_is_drug")).then(pl.lit(0, flagged.schema["_overlap"])).alias("_overlap"),
        pl.lit(False).alias("_dup_across"), pl.lit(False).alias("_dup_in"))
    return pl.concat([flagged, alone], how="vertical", rechunk=False)


_LINE_ORDER = ["_pkey", "_ikey", "service_date", "_cidx", "line_no"]


@functools.cache
def _line_flag_exprs() -> tuple[pl.Expr, ...]:
    """The expressions of :func:`_line_flags` (built once: polars expressions are immutable
    and reusable across plans, and building them is a fixed cost of every call)."""
    drug = pl.col("_is_drug")

    def previous_drug(expr: pl.Expr) -> pl.Expr:
        # At a drug line: the value at the nearest earlier drug line (non-drug lines between
        # are skipped by masking them and filling forward).
        return pl.when(drug).then(expr).forward_fill().shift(1)

    supply = pl.col("days_supply").fill_null(0)
    same_drug = ((previous_drug(pl.col("_pkey")) == pl.col("_pkey"))
                 & (previous_drug(pl.col("_ikey")) == pl.col("_ikey")))
    overlap = previous_drug(supply) - days_between(pl.col("service_date"),
                                                   previous_drug(pl.col("service_date")))
    run = _LINE_ORDER[:3]
    run_start = ~pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in run]) \
        .fill_null(False)
    run_end = run_start.shift(-1, fill_value=True)
    first_claim = pl.when(run_start).then(pl.col("_cidx")).forward_fill()
    last_claim = pl.when(run_end).then(pl.col("_cidx")).backward_fill()
    not_bed = pl.col("_not_bed")
    return (
        pl.when(drug).then(pl.when(same_drug).then(overlap.clip(lower_bound=0)).otherwise(0))
        .alias("_overlap"),
        (first_claim != last_claim).alias("_dup_across"),
        (not_bed & ~pl.struct("_cidx", "_ikey", "quantity", not_bed).is_first_distinct())
        .alias("_dup_in"),
    )


def _line_aggregates(lines: pl.DataFrame | pl.LazyFrame,
                     stats: Mapping[str, tuple[pl.DataFrame, pl.DataFrame]],
                     params: FeatureParams) -> pl.LazyFrame:
    """Every line-derived claim feature in one group-by of the lines on ``_cidx``.

    Counts, duplicates (:func:`_line_flags`), refill overlap and the drug-line aggregates
    (dose, supply, restrictions, value, drug amount vs peers).  Drug-only quantities are
    null on other lines, so max/sum over a claim see its drug lines only; claims without
    drug lines get nulls (sums 0) that :func:`_claim_partition` fills.  The per-line values
    are computed before the group-by so every aggregation is a plain column reduction
    (polars' fast path).
    """
    per_line = _apply(lines.lazy(), stats, "_drug_amt").select(_per_line_exprs(params))
    # Per-line values first, then the sort of _line_flags on these narrow numeric columns.
    # (Collected first above a few thousand lines: the eager sort is the cheaper one; on
    # a few lines, fewer collects are.)
    if isinstance(lines, pl.DataFrame) and lines.height > _EAGER_SORT_LINES:
        per_line = per_line.collect()
    return _line_flags(per_line).lazy().group_by("_cidx").agg(_line_aggs())


@functools.lru_cache(maxsize=16)
def _per_line_exprs(params: FeatureParams) -> tuple[pl.Expr, ...]:
    """Per-line columns of :func:`_line_aggregates` (cached by ``params``)."""
    emergency = [d.lower() for d in params.emergency_departments]
    drug = pl.col("_is_drug")
    supply = pl.col("days_supply").fill_null(1).clip(lower_bound=1)
    limit = (
        pl.when(pl.col("chronic")).then(params.days_supply_limit_chronic)
        .when(pl.col("_department").is_in(emergency)).then(params.days_supply_limit_emergency)
        .otherwise(params.days_supply_limit_ordinary)
    )
    age = (days_between("service_date", "birth_date") / 365.25).floor()

    def on_drug(expr: pl.Expr, name: str) -> pl.Expr:
        return pl.when(drug).then(expr).alias(name)

    return (
        *map(pl.col, ("_pkey", "_ikey", "service_date", "_cidx", "line_no", "quantity",
                      "days_supply")), drug,
        (pl.col("item_type") != "bed").alias("_not_bed"),
        on_drug(pl.col("quantity") / (pl.col("max_daily_units") * supply), "_dose_ratio"),
        on_drug((pl.col("days_supply").fill_null(0) - limit).clip(lower_bound=0),
                "_over_limit"),
        on_drug((pl.col("sex_restriction").is_not_null()
                 & (pl.col("sex_restriction") != pl.col("sex"))).fill_null(False), "_sex_hit"),
        on_drug(((pl.col("min_age").is_not_null() & (age < pl.col("min_age")))
                 | (pl.col("max_age").is_not_null() & (age > pl.col("max_age"))))
                .fill_null(False), "_age_hit"),
        on_drug((pl.col("restricted_level").is_not_null()
                 & (pl.col("_fac_level") < pl.col("restricted_level"))).fill_null(False),
                "_level_hit"),
        on_drug(pl.col("_drug_amt_ratio"), "_drug_amt_ratio"),
        on_drug(pl.col("_drug_amt_z"), "_drug_amt_z"),
        on_drug(pl.col("amount"), "_drug_line_amount"),
        pl.when(drug & pl.col("_high_value").fill_null(False)).then(pl.col("amount"))
        .alias("_high_value_line_amount"),
    )


@functools.cache
def _line_aggs() -> tuple[pl.Expr, ...]:
    """The per-claim aggregations of :func:`_line_aggregates`."""
    return (
        pl.len().alias("n_lines"),
        pl.col("_dup_across").sum().alias("dup_lines_across_claims"),
        pl.col("_not_bed").sum().alias("_care_lines"),
        pl.col("_dup_in").sum().alias("dup_lines_in_claim"),
        pl.col("_is_drug").sum().alias("n_drug_lines"),
        pl.col("_dose_ratio").max().alias("dose_ratio_max"),
        pl.col("_over_limit").max().alias("days_over_limit_max"),
        pl.col("_sex_hit").sum().alias("sex_restriction_hits"),
        pl.col("_age_hit").sum().alias("age_restriction_hits"),
        pl.col("_level_hit").sum().alias("level_restriction_hits"),
        pl.col("_drug_amt_ratio").max().alias("drug_amount_ratio_max"),
        pl.col("_drug_amt_z").max().alias("drug_amount_z_max"),
        pl.col("_drug_line_amount").sum().alias("_drug_amount"),
        pl.col("_high_value_line_amount").sum().alias("_high_value_amount"),
        pl.col("_overlap").max().alias("refill_overlap_days_max"),
        (pl.col("_overlap") > 0).sum().alias("n_refill_overlap_lines"),
    )


def _stay_features(claims: pl.LazyFrame) -> pl.LazyFrame:
    """Readmission gap, overlapping stays and outpatient claims during inpatient stays,
    keyed by ``_cidx`` (claims from :func:`_keyed_claims`)."""
    e = _stay_exprs()
    stays = claims.filter(_is_stay).select(*e["stay_columns"])
    readmit = stays.select("_cidx", e["gap"])
    other = stays.select(*e["other"])
    # One join of every claim with its patient's stays serves both relations (a few plan
    # nodes instead of two joins and their filters: the fixed cost of a few-claim call).
    pairs = (
        claims.select(*e["claim_columns"])
        .join(other, on="patient_id", how="inner")
        .select(*e["pair"])
        .filter(e["pair_filter"])
    )
    by_claim = pairs.group_by("_cidx").agg(*e["by_claim"])
    by_stay = pairs.filter(pl.col("_during")).group_by(e["other_cidx"]).agg(e["by_stay"])
    return (
        readmit.join(by_stay, on="_cidx", how="left")
        .join(by_claim, on="_cidx", how="full", coalesce=True)
    )


@functools.cache
def _stay_exprs() -> dict[str, pl.Expr | tuple]:
    """The expressions of :func:`_stay_features`, built once (a fixed cost of every call)."""
    # _cidx follows claim_id order, so it breaks ties as claim_id would.
    order = ["admit_date", "_cidx"]
    prev_discharge = pl.col("discharge_date").shift(1).over(["patient_id", "diagnosis_code"],
                                                            order_by=order)
    overlap = (pl.col("_stay") & (pl.col("_cidx") != pl.col("_other"))
               & (pl.col("admit_date") < pl.col("_o_discharge"))
               & (pl.col("_o_admit") < pl.col("discharge_date")))
    # Strictly inside the stay: visits on admission or discharge day are ordinary.
    during = ((pl.col("setting") != "inpatient")
              & (pl.col("service_date") > pl.col("_o_admit"))
              & (pl.col("service_date") < pl.col("_o_discharge")))
    return {
        "stay_columns": tuple(map(pl.col, ("_cidx", "patient_id", "diagnosis_code",
                                           "admit_date", "discharge_date"))),
        "gap": days_between(pl.col("admit_date"), prev_discharge).alias("_gap"),
        "other": (pl.col("patient_id"), pl.col("_cidx").alias("_other"),
                  pl.col("admit_date").alias("_o_admit"),
                  pl.col("discharge_date").alias("_o_discharge")),
        "claim_columns": (*map(pl.col, ("_cidx", "patient_id", "service_date", "setting",
                                        "admit_date", "discharge_date")),
                          _is_stay.alias("_stay")),
        "pair": (pl.col("_cidx"), pl.col("_other"), overlap.alias("_overlap"),
                 during.alias("_during")),
        "pair_filter": pl.col("_overlap") | pl.col("_during"),
        "by_claim": (pl.col("_overlap").sum().alias("n_overlapping_stays"),
                     pl.when(pl.col("_during").any()).then(pl.lit(1, pl.Int32))
                     .alias("during_inpatient_stay")),
        "other_cidx": pl.col("_other").alias("_cidx"),
        "by_stay": pl.len().alias("n_outpatient_during_stay"),
    }


_is_stay = ((pl.col("setting") == "inpatient") & pl.col("admit_date").is_not_null()
            & pl.col("discharge_date").is_not_null())
# The columns of _stay_features when a partition holds no stay (every value neutral).
_NO_STAYS = {"_gap": pl.Int64, "n_overlapping_stays": pl.UInt32,
             "n_outpatient_during_stay": pl.UInt32, "during_inpatient_stay": pl.Int32}


# Peer groups of the claim-level ratios / robust z: prefix -> (keys, value column).
_PEER_GROUPS = {
    "amount_dx": (["setting", "diagnosis_code", "_fac_level"], "total_amount"),
    "amount_drg": (["drg_group", "_fac_level"], "_drg_amount"),
    "drg_weight_dx": (["diagnosis_code"], "drg_weight"),
    "_drug_amt": (["item_code", "_fac_level"], "amount"),
}
_drg_amount = pl.when(pl.col("drg_group").is_not_null()).then(pl.col("total_amount"))


def _key_hash(prefix: str) -> pl.Expr:
    """64-bit hash of the group keys of peer group ``prefix`` (column ``_key{prefix}``)."""
    return pl.struct(_PEER_GROUPS[prefix][0]).hash(_PARTITION_SEED).alias(f"_key{prefix}")


def _hashed_peer_stats(source: pl.LazyFrame, prefixes: list[str],
                       candidates: pl.LazyFrame | None = None
                       ) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """:func:`peer_stats` of the peer groups ``prefixes`` (of :data:`_PEER_GROUPS`) over
    ``source``, with bounded memory: exact medians need every value of a group in memory,
    so the rows are first reduced to a 64-bit hash of each group's keys plus its value (16
    bytes a row and group instead of the string keys), in one pass for all the groups; the
    few distinct key combinations are mapped back afterwards (collision odds
    ~groups²/2^65, negligible).  ``candidates`` : a small frame of the groups' keys holding
    every combination present in ``source`` (default: read them from ``source``, one more
    pass over it)."""
    values = [_PEER_GROUPS[prefix][1] for prefix in prefixes]
    hashes = [_key_hash(prefix) for prefix in prefixes]
    narrow = source.select(*hashes, *sorted(set(values))).collect(engine="streaming")
    keys = sorted({key for prefix in prefixes for key in _PEER_GROUPS[prefix][0]})
    names = (source if candidates is None else candidates).select(*keys, *hashes).unique() \
        .collect(engine="streaming")
    out = {}
    for prefix, value, key_hash in zip(prefixes, values, hashes, strict=True):
        key = key_hash.meta.output_name()
        rows = narrow.lazy().select(pl.col(key).alias("_key"), value)
        by_hash, overall = pl.collect_all([robust_stats(rows, ["_key"], value, prefix),
                                           robust_stats(rows, [], value, "_g")])
        group_keys = _PEER_GROUPS[prefix][0]
        group_names = names.select(*group_keys, pl.col(key).alias("_key")).unique()
        out[prefix] = (group_names.join(by_hash, on="_key", how="inner").drop("_key"), overall)
    return out


def _reference_stats(tables: Tables, reference_window: Window
                     ) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """Peer statistics of every claim-level peer group, fitted on ``reference_window``.

    Computed once, over narrow hashed projections (see :func:`_hashed_peer_stats`): the
    claim groups in one pass over the claims, the drug group in one over the drug lines,
    so the partitions of :func:`claim_features` share them and memory stays far below that
    of the claim frame.

    Returns
    -------
    prefix -> (group statistics, one-row global statistics), see
    :func:`medfraud.features._common.peer_stats`.
    """
    facilities = tables.facilities.select("facility_id", pl.col("level").alias("_fac_level"))
    claims = (tables.claims.filter(in_window("service_date", reference_window))
              .join(facilities, on="facility_id", how="left")
              .with_columns(_drg_amount.alias("_drg_amount")))
    key = _claim_key(claims.select("claim_id"))
    drug_lines = (tables.claim_lines.filter(pl.col("item_type") == "drug")
                  .select(key.alias("_ckey"), "item_code", "amount")
                  .join(claims.select(key.alias("_ckey"), "_fac_level"), on="_ckey",
                        how="inner"))
    # Every (drug, level) pair that can occur (a null level: facility missing from the
    # table), without a second pass over the line join.
    levels = facilities.select("_fac_level")
    no_level = pl.LazyFrame({"_fac_level": [None]}).cast(levels.collect_schema())
    drug_levels = (tables.claim_lines.filter(pl.col("item_type") == "drug").select("item_code")
                   .unique().join(pl.concat([levels, no_level]).unique(), how="cross"))
    stats = _hashed_peer_stats(claims, [p for p in _PEER_GROUPS if p != "_drug_amt"])
    stats |= _hashed_peer_stats(drug_lines, ["_drug_amt"], drug_levels)
    return {prefix: stats[prefix] for prefix in _PEER_GROUPS}


@dataclass(frozen=True)
class ClaimReference:
    """Peer-group statistics of the claim features, fitted once on a reference window.

    Scoring many small batches against the same training window (the exported model, the
    REST service) reuses one reference instead of refitting the medians on every call.

    Attributes
    ----------
    window : the reference window (first, last service date), None = every claim.
    stats : peer-group prefix -> (group statistics, one-row global statistics), as
        :func:`medfraud.features._common.peer_stats` returns them, collected.
    """

    window: Window
    stats: Mapping[str, tuple[pl.DataFrame, pl.DataFrame]]


def fit_claim_reference(tables: Tables, reference_window: Window) -> ClaimReference:
    """The :class:`ClaimReference` of ``reference_window`` over ``tables``."""
    return ClaimReference(reference_window, _reference_stats(tables, reference_window))


def _apply(frame: pl.LazyFrame, stats: Mapping[str, tuple[pl.DataFrame, pl.DataFrame]],
           prefix: str) -> pl.LazyFrame:
    keys, value = _PEER_GROUPS[prefix]
    group, overall = stats[prefix]
    return apply_peer_stats(frame, group.lazy(), overall, keys, value, prefix)


def _doctor_day(claims: pl.LazyFrame) -> pl.DataFrame:
    """(doctor, service date) pairs of ``claims`` (the claims of the window) billed at two
    or more facilities.

    Returns
    -------
    DataFrame with _doctor_hash (UInt64 hash of doctor_id), service_date and
    doctor_facilities_same_day (UInt32 >= 2).  Every other doctor-day of a claim has
    exactly one facility; keeping only the exceptions (and hashed ids) keeps this small.
    """
    return (claims
            .select(pl.col("doctor_id").hash(_PARTITION_SEED).alias("_doctor_hash"),
                    "service_date", pl.col("facility_id").hash(_PARTITION_SEED).alias("_f"))
            .unique()
            .group_by("_doctor_hash", "service_date")
            .agg(pl.len().alias("doctor_facilities_same_day"))
            .filter(pl.col("doctor_facilities_same_day") > 1)
            .collect(engine="streaming"))


def claim_features(tables: Tables, window: Window, reference_window: Window,
                   params: FeatureParams, reference: ClaimReference | None = None,
                   partitions: PatientPartitions | None = None,
                   each_partition: PartitionCallback | None = None) -> pl.DataFrame:
    """Claim-level frame: claim_id, context columns, CLAIM_FEATURES and HELPER_COLUMNS.

    Parameters
    ----------
    tables : data tables of the dataset.
    window : service dates of the claims to describe (inclusive), None for all.
    reference_window : service dates whose claims fit the peer-group medians and scales.
    params : thresholds.
    reference : precomputed statistics of ``reference_window`` (see
        :func:`fit_claim_reference`); fitted here when None.
    partitions : a split of this dataset by patient (:func:`medfraud.partitions.split_by_patient`)
        to read instead of splitting the window here, when it holds every claim of
        ``window`` with the roster's facility (``with_roster``).
    each_partition : called with each partition's rows of the returned frame (every claim
        of ``window`` of the partition's patients, in no particular order) and the lazy
        registry rows of those patients, once per partition (once with the whole frame
        and registry when there is one): for work on whole patients' claims, done while
        a partition's frame is small.

    Returns
    -------
    DataFrame, one row per claim with ``service_date`` in ``window``, in claim_id order
    (except with several partitions over claims not stored in claim_id order: then in no
    particular order, and build_features sorts); feature columns are Float32 or integer
    (Int8 flags, UInt16 counts, Int16 day spans) and never null.

    Notes
    -----
    Windows of more than :data:`CLAIMS_PER_PARTITION` claims are processed in partitions by
    patient hash: every feature of a claim depends on its own patient's claims only, except
    the peer statistics and the doctor's facilities per day, which are computed once over
    the whole window (narrow projections) and joined into every partition.
    """
    # The table's row count first: a metadata read (in-memory frame or Parquet footers),
    # where the window's count is a query over the dates, a fixed cost of every call.
    n_claims = tables.claims.select(pl.len()).collect(engine="in-memory").item()
    if n_claims > CLAIMS_PER_PARTITION:
        n_claims = tables.claims.filter(in_window("service_date", window)).select(pl.len()) \
            .collect().item()
    stats = (reference if reference is not None
             else fit_claim_reference(tables, reference_window)).stats
    if n_claims <= CLAIMS_PER_PARTITION:
        # The doctor-day exceptions then come from the collected claim base (no rescan).
        frame = _claim_partition(tables, _claims_base(tables, window), tables.claim_lines,
                                 params, stats, None, max_claims=n_claims)
        if each_partition is not None:
            each_partition(frame, tables.patients)
        return frame
    window_claims = tables.claims.filter(in_window("service_date", window))
    doctor_day = _doctor_day(window_claims)
    # Claim tables are usually stored in claim_id order: then the position of a claim in
    # the scan (``_row``, carried through the partitions) orders the result as claim_id
    # does, and the final sort is on integers (a string arg-sort costs ~0.8 s a million).
    scan_sorted = window_claims.select(
        (pl.col("claim_id") >= pl.col("claim_id").shift(1)).all()
    ).collect(engine="streaming").item()
    start, end = window if window is not None else (None, None)
    if partitions is not None and partitions.covers(start, end) and partitions.with_roster:
        frame = _partitioned(tables, partitions, window, params, stats, doctor_day,
                             each_partition)
    else:
        split = {"claims": tables.claims, "claim_lines": tables.claim_lines,
                 "patients": tables.patients, "duty_roster": tables.duty_roster}
        with split_by_patient(split, window=window,
                              claims_per_partition=CLAIMS_PER_PARTITION) as own:
            frame = _partitioned(tables, own, window, params, stats, doctor_day,
                                 each_partition)
    if scan_sorted:
        return sort_by_column(frame, ROW_COLUMN).drop(ROW_COLUMN)
    return frame.drop(ROW_COLUMN)  # build_features sorts by claim_id


def _partitioned(tables: Tables, partitions: PatientPartitions, window: Window,
                 params: FeatureParams, stats: Mapping[str, tuple[pl.DataFrame, pl.DataFrame]],
                 doctor_day: pl.DataFrame, each_partition: PartitionCallback | None
                 ) -> pl.DataFrame:
    """:func:`_claim_partition` of the claims of ``window`` in each partition, concatenated
    (in no particular order; ``_row`` kept); see :func:`claim_features` for
    ``each_partition``."""
    attributes = _patient_attributes(tables).collect_schema().names()
    parts = []
    for part in partitions.parts:
        claims = part["claims"].filter(in_window("service_date", window))
        base = _join_attributes(tables, claims, part["patients"].select(attributes))
        parts.append(_claim_partition(tables, base, part["claim_lines"], params, stats,
                                      doctor_day, ordered=False))
        if each_partition is not None:
            each_partition(parts[-1], part["patients"])
    return pl.concat(parts, how="vertical", rechunk=False)


def _injective_key(frame: pl.DataFrame, column: str, key: str) -> pl.DataFrame:
    """Add ``key``: a 64-bit hash of ``column`` (cheap to sort, group and join on), or
    ``column`` itself in the (odds ~n²/2^65) case that two distinct values collide, so the
    features stay exact."""
    # Series methods and hstack, not with_columns: no query plan (fixed cost) per call.
    values = frame.get_column(column)
    hashed = values.hash(_PARTITION_SEED)
    if hashed.n_unique() != values.n_unique():
        return frame.hstack([values.alias(key)])
    return frame.hstack([hashed.alias(key)])


def _keyed_claims(claims_base: pl.LazyFrame, max_claims: int | None = None) -> pl.DataFrame:
    """Collect a claim base sorted by claim_id, with ``_cidx`` (UInt32 position, so it
    orders claims as claim_id does) and ``_pkey`` (injective key of patient_id).
    ``max_claims`` : a bound on the claims of ``claims_base``, None when unknown."""
    # In-memory engine for the per-partition collects (at most ~250k claims): cheaper
    # than the streaming engine here, from a few claims up (polars 2.1).
    claims = claims_base.collect(engine="in-memory",
                                 optimizations=_plan_optimizations(max_claims)).sort("claim_id")
    claims = claims.hstack([pl.int_range(0, claims.height, dtype=pl.UInt32, eager=True)
                            .alias("_cidx")])
    return _injective_key(claims, "patient_id", "_pkey")


def _claim_partition(tables: Tables, claims_base: pl.LazyFrame, raw_lines: pl.LazyFrame,
                     params: FeatureParams, stats: Mapping[str, tuple[pl.DataFrame, pl.DataFrame]],
                     doctor_day: pl.DataFrame | None, ordered: bool = True,
                     max_claims: int | None = None) -> pl.DataFrame:
    """Claim features of the claims of ``claims_base`` (one patient partition, or the whole
    window), whose lines are among ``raw_lines``; see :func:`claim_features`.

    ``doctor_day`` : :func:`_doctor_day` of the window; None when ``claims_base`` is the
    whole window (it is then computed from the collected claims, no second scan).
    ``ordered`` : return the rows in claim_id order (else in no particular order, for
    partitions that are sorted together afterwards).
    ``max_claims`` : a bound on the claims of ``claims_base`` (None: unknown).
    """
    # The joined claim and line bases feed several branches; materialising them once is
    # cheaper than relying on common-subplan elimination across all of them.
    claims_df = _keyed_claims(claims_base, max_claims)
    optimizations = _plan_optimizations(claims_df.height)
    lines: pl.DataFrame | pl.LazyFrame = _lines_base(tables, claims_df, params, raw_lines)
    if claims_df.height <= FEW_CLAIMS:
        # Few claims: the lines stay in the claim plan (one collect fewer), keyed by
        # item_code itself (exact, like the hash fallback; no collected column to check).
        lines = lines.with_columns(pl.col("item_code").alias("_ikey"))
    else:
        lines = _injective_key(lines.collect(engine="in-memory", optimizations=optimizations),
                               "item_code", "_ikey")
    # Window expressions on the collected frame: same values as a group-by joined back,
    # one node instead of two (the fixed cost of a few-claim call is per node).
    # claims_base is the whole window when doctor_day is None: its doctor-days count here.
    per_day = _per_day_exprs(doctor_day is None)
    claims = claims_df.lazy().with_columns(per_day)

    c = _apply(claims, stats, "amount_dx")
    c = _apply(c.with_columns(_drg_amount.alias("_drg_amount")), stats, "amount_drg")
    c = _apply(c, stats, "drg_weight_dx")

    if ((claims_df.get_column("setting") == "inpatient")
            & claims_df.get_column("admit_date").is_not_null()
            & claims_df.get_column("discharge_date").is_not_null()).any():  # see _is_stay
        stays = _stay_features(claims)
        c = c.join(stays, on="_cidx", how="left")
    else:  # nothing to compute: every stay feature is neutral
        c = c.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in _NO_STAYS.items())
    if doctor_day is not None:
        c = c.with_columns(pl.col("doctor_id").hash(_PARTITION_SEED).alias("_doctor_hash")) \
            .join(doctor_day.lazy(), on=["_doctor_hash", "service_date"], how="left")
    first, second = _claim_exprs(params)
    c = c.join(_line_aggregates(lines, stats, params), on="_cidx", how="left") \
        .with_columns(first).with_columns(second)
    # _row: position in the split's scan, present in split partitions (see claim_features).
    row = [ROW_COLUMN] if ROW_COLUMN in claims_df.columns else []
    # In-memory engine: on this plan (a dozen joins over frames already in memory) the
    # default engine choice cost ~1.5x the CPU, from 16 claims to 250k (polars 2.1).
    out = c.select(["_cidx", *row, "claim_id", *CONTEXT_COLUMNS, *CLAIM_FEATURES,
                    *HELPER_COLUMNS]).with_columns(_NARROW_COLUMNS) \
        .collect(engine="in-memory", optimizations=optimizations)
    if ordered and not out.get_column("_cidx").is_sorted():
        # Eager: the same sort inside the lazy query above took twice as long (polars 2.1).
        out = out.sort("_cidx")
    out.drop_in_place("_cidx")
    return out


@functools.cache
def _per_day_exprs(doctor_days: bool) -> tuple[pl.Expr, ...]:
    """Card use per (patient, day) and, with ``doctor_days``, facilities per (doctor, day)."""
    day = ["_pkey", "service_date"]
    per_day = (
        pl.len().over(day).alias("card_claims_same_day"),
        pl.col("region").n_unique().over(day).alias("card_regions_same_day"),
        pl.col("facility_id").n_unique().over(day).alias("card_facilities_same_day"),
    )
    if doctor_days:
        per_day += (pl.col("facility_id").n_unique().over("doctor_id", "service_date")
                    .alias("doctor_facilities_same_day"),)
    return per_day


@functools.lru_cache(maxsize=16)
def _claim_exprs(params: FeatureParams) -> tuple[tuple[pl.Expr, ...], tuple[pl.Expr, ...]]:
    """The two final ``with_columns`` steps of :func:`_claim_partition` (cached by
    ``params``: building these ~60 expressions cost as much as running them on a
    few-claim scoring call)."""
    night_start, night_end = params.night_hours
    hour = pl.col("settled_at").dt.hour()
    los = days_between("discharge_date", "admit_date")
    first = (
        pl.col("total_amount").log1p().alias("log_amount"),
        pl.when(pl.col("doctor_id").is_not_null())
        .then(pl.col("doctor_facilities_same_day").fill_null(1))
        .alias("doctor_facilities_same_day"),
        pl.when(pl.col("total_amount") > 0).then(pl.col("fund_paid") / pl.col("total_amount"))
        .otherwise(0.0).alias("fund_share"),
        days_between("service_date", "death_date").clip(lower_bound=0).fill_null(0)
        .alias("days_after_death"),
        pl.col("cross_region").cast(pl.Int8).alias("cross_region"),
        pl.col(ROSTER_COLUMN).is_not_null().cast(pl.Int8).alias("doctor_on_duty"),
        (pl.col(ROSTER_COLUMN).is_not_null()
         & (pl.col(ROSTER_COLUMN) != pl.col("facility_id"))).cast(pl.Int8)
        .alias("doctor_roster_other_facility"),
        (pl.col("setting") == "inpatient").cast(pl.Int8).alias("is_inpatient"),
        los.fill_null(0).alias("length_of_stay"),
        pl.when(pl.col("setting") == "inpatient")
        .then(pl.col("_care_lines").fill_null(0) / los.fill_null(0).clip(lower_bound=1))
        .otherwise(0.0).alias("care_lines_per_bed_day"),
        pl.col("_gap").fill_null(params.gap_cap_days).clip(upper_bound=params.gap_cap_days)
        .alias("readmission_gap_days"),
        pl.col("_gap").is_between(0, params.readmission_days).fill_null(False).cast(pl.Int8)
        .alias("readmitted_within_limit"),
        (pl.col("settled_at").dt.weekday() >= 6).cast(pl.Int8).alias("weekend"),
        ((hour >= night_start) | (hour < night_end)).cast(pl.Int8).alias("night"),
        *[(pl.col("setting") == s).cast(pl.Int8).alias(f"setting_{s}")
          for s in ("outpatient", "inpatient", "pharmacy", "online")],
        pl.col("drg_weight").fill_null(0.0).alias("drg_weight"),
        pl.col("_drug_amount").fill_null(0.0),
        pl.col("_high_value_amount").fill_null(0.0),
        pl.col("service_date").dt.truncate("1mo").alias("_month"),
    )
    second = (
        pl.when(pl.col("_drug_amount") > 0)
        .then(pl.col("_high_value_amount") / pl.col("_drug_amount")).otherwise(0.0)
        .alias("high_value_drug_share"),
        *[pl.col(name).fill_null(0) for name in (
            "n_drug_lines", "dose_ratio_max", "days_over_limit_max", "refill_overlap_days_max",
            "n_refill_overlap_lines", "sex_restriction_hits", "age_restriction_hits",
            "level_restriction_hits", "n_lines", "dup_lines_in_claim",
            "dup_lines_across_claims", "n_overlapping_stays", "during_inpatient_stay",
            "n_outpatient_during_stay")],
        pl.col("drug_amount_ratio_max").fill_null(1.0),
        pl.col("drug_amount_z_max").fill_null(0.0),
    )
    return first, second
