"""Claim-level features: one row per claim in the window.

Every feature is a polars expression over lazy frames; per-entity orderings use a sort
and a shift (refills) or a window function with ``order_by`` (readmissions, few rows).
See docs/features.md for the definition of every column.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from medfraud.features._common import (
    FeatureParams,
    Tables,
    Window,
    apply_peer_stats,
    days_between,
    in_window,
    peer_stats,
    robust_stats,
)

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
HELPER_COLUMNS = ["_drug_amount", "_high_value_amount", "_month", "diagnosis_code"]


# Claim-level features are computed in partitions of about this many claims (by patient
# hash: every patient-history feature stays inside one partition), so the joined claim and
# line frames of one partition, not of the whole window, bound the peak memory.
CLAIMS_PER_PARTITION = 250_000
_PARTITION_SEED = 0x5EED


def _claims_base(tables: Tables, window: Window) -> pl.LazyFrame:
    """Claims in ``window`` joined with the patient, doctor and facility attributes used below
    and the duty roster's facility of the doctor that day (``_roster_facility``).

    The roster grows with the doctors: joined here, in the one pass that splits the claims
    into partitions, instead of once per partition.  Its key (doctor_id, date) is unique in
    a valid dataset, so the join adds no rows.
    """
    roster = tables.duty_roster.select(pl.col("doctor_id"), pl.col("date").alias("service_date"),
                                       pl.col("facility_id").alias("_roster_facility"))
    patients = tables.patients.select("patient_id", "sex", "birth_date", "death_date", "chronic")
    doctors = tables.doctors.select("doctor_id", pl.col("department").str.to_lowercase()
                                    .alias("_department"))
    facilities = tables.facilities.select("facility_id", pl.col("level").alias("_fac_level"))
    return (
        tables.claims.filter(in_window("service_date", window))
        .join(patients, on="patient_id", how="left")
        .join(doctors, on="doctor_id", how="left")
        .join(facilities, on="facility_id", how="left")
        .join(roster, on=["doctor_id", "service_date"], how="left")
    )


def _lines_base(tables: Tables, claims: pl.LazyFrame, params: FeatureParams,
                raw_lines: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Lines of ``claims`` with claim context and, for drug lines, the catalogue attributes.

    ``raw_lines`` : claim_lines rows to read (default the whole table); a partition passes
    its own lines.
    """
    raw_lines = tables.claim_lines if raw_lines is None else raw_lines
    threshold = tables.drugs.select(
        pl.col("unit_price").quantile(params.high_value_quantile).alias("_hv_threshold"))
    drugs = tables.drugs.select(
        pl.col("drug_code").alias("item_code"), pl.col("unit_price").alias("_cat_price"),
        "max_daily_units", "sex_restriction", "min_age", "max_age", "restricted_level",
    ).join(threshold, how="cross").with_columns(
        (pl.col("_cat_price") > pl.col("_hv_threshold")).alias("_high_value")).drop("_hv_threshold")
    context = claims.select("claim_id", "patient_id", "service_date", "sex", "birth_date",
                            "chronic", "_department", "_fac_level")
    return (
        raw_lines.drop("unit_price").join(context, on="claim_id", how="inner")
        .join(drugs.drop("_cat_price"), on="item_code", how="left")
        .with_columns((pl.col("item_type") == "drug").alias("_is_drug"))
    )


def _drug_line_features(lines: pl.LazyFrame,
                        stats: dict[str, tuple[pl.DataFrame, pl.DataFrame]],
                        params: FeatureParams) -> pl.LazyFrame:
    """Per-claim aggregates of drug lines (dose, supply, refill, restrictions, value)."""
    emergency = [d.lower() for d in params.emergency_departments]
    supply = pl.col("days_supply").fill_null(1).clip(lower_bound=1)
    limit = (
        pl.when(pl.col("chronic")).then(params.days_supply_limit_chronic)
        .when(pl.col("_department").is_in(emergency)).then(params.days_supply_limit_emergency)
        .otherwise(params.days_supply_limit_ordinary)
    )
    age = (days_between("service_date", "birth_date") / 365.25).floor()
    drug = lines.filter(pl.col("_is_drug"))
    drug = _apply(drug, stats, "_drug_amt")
    drug = drug.with_columns(
        (pl.col("quantity") / (pl.col("max_daily_units") * supply)).alias("_dose_ratio"),
        (pl.col("days_supply").fill_null(0) - limit).clip(lower_bound=0).alias("_over_limit"),
        (pl.col("sex_restriction").is_not_null() & (pl.col("sex_restriction") != pl.col("sex")))
        .alias("_sex_hit"),
        ((pl.col("min_age").is_not_null() & (age < pl.col("min_age")))
         | (pl.col("max_age").is_not_null() & (age > pl.col("max_age")))).alias("_age_hit"),
        (pl.col("restricted_level").is_not_null()
         & (pl.col("_fac_level") < pl.col("restricted_level"))).alias("_level_hit"),
    )
    return drug.group_by("claim_id").agg(
        pl.len().alias("n_drug_lines"),
        pl.col("_dose_ratio").max().fill_null(0).alias("dose_ratio_max"),
        pl.col("_over_limit").max().alias("days_over_limit_max"),
        pl.col("_sex_hit").fill_null(False).sum().alias("sex_restriction_hits"),
        pl.col("_age_hit").fill_null(False).sum().alias("age_restriction_hits"),
        pl.col("_level_hit").fill_null(False).sum().alias("level_restriction_hits"),
        pl.col("_drug_amt_ratio").max().alias("drug_amount_ratio_max"),
        pl.col("_drug_amt_z").max().alias("drug_amount_z_max"),
        pl.col("amount").sum().alias("_drug_amount"),
        pl.col("amount").filter(pl.col("_high_value").fill_null(False)).sum()
        .alias("_high_value_amount"),
    )


def _refill_overlap(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Per claim: max and count of drug lines filled before the previous supply ran out.

    For each (patient, drug) the fills are ordered by service date (then claim, line); the
    overlap of a fill is ``previous days_supply - days since the previous fill``, floored at 0.
    A sort of a narrow frame plus a shift is used instead of a window function: most
    (patient, drug) groups hold a single fill and per-group windows cost far more.
    """
    key = ["patient_id", "item_code"]
    fills = (
        lines.filter(pl.col("_is_drug"))
        .select(*key, "service_date", "claim_id", "line_no", pl.col("days_supply").fill_null(0))
        .sort([*key, "service_date", "claim_id", "line_no"])
    )
    same_group = (pl.col("patient_id") == pl.col("patient_id").shift(1)) & (
        pl.col("item_code") == pl.col("item_code").shift(1))
    overlap = (pl.col("days_supply").shift(1)
               - days_between(pl.col("service_date"), pl.col("service_date").shift(1)))
    return (
        fills.with_columns(pl.when(same_group).then(overlap.clip(lower_bound=0)).otherwise(0)
                           .alias("_overlap"))
        .group_by("claim_id").agg(
            pl.col("_overlap").max().alias("refill_overlap_days_max"),
            (pl.col("_overlap") > 0).sum().alias("n_refill_overlap_lines"),
        )
    )


def _line_features(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Per-claim line counts and duplicate lines (within a claim and across claims)."""
    # Bed lines repeat once per day of a stay by design: not duplicates.
    within = (
        lines.filter(pl.col("item_type") != "bed")
        .group_by("claim_id", "item_code", "quantity").agg(pl.len().alias("_n"))
        .group_by("claim_id").agg((pl.col("_n") - 1).sum().alias("dup_lines_in_claim"))
    )
    across_key = ["patient_id", "item_code", "service_date"]
    # Keys billed in more than one claim are rare: find them with one group_by, then count.
    repeated = (
        lines.group_by(across_key).agg(pl.col("claim_id").n_unique().alias("_n_claims"))
        .filter(pl.col("_n_claims") > 1).select(across_key)
    )
    across = (
        lines.join(repeated.with_columns(pl.lit(1, pl.UInt32).alias("_rep")), on=across_key,
                   how="left")
        .group_by("claim_id").agg(
            pl.len().alias("n_lines"),
            pl.col("_rep").sum().alias("dup_lines_across_claims"),
            (pl.col("item_type") != "bed").sum().alias("_care_lines"),
        )
    )
    return across.join(within, on="claim_id", how="left")


def _stay_features(claims: pl.LazyFrame) -> pl.LazyFrame:
    """Readmission gap, overlapping stays and outpatient claims during inpatient stays."""
    stays = claims.filter(
        (pl.col("setting") == "inpatient") & pl.col("admit_date").is_not_null()
        & pl.col("discharge_date").is_not_null()
    ).select("claim_id", "patient_id", "diagnosis_code", "admit_date", "discharge_date")
    order = ["admit_date", "claim_id"]
    prev_discharge = pl.col("discharge_date").shift(1).over(["patient_id", "diagnosis_code"],
                                                            order_by=order)
    readmit = stays.select(
        "claim_id", days_between(pl.col("admit_date"), prev_discharge).alias("_gap"))
    other = stays.select("patient_id", pl.col("claim_id").alias("_other"),
                         pl.col("admit_date").alias("_o_admit"),
                         pl.col("discharge_date").alias("_o_discharge"))
    overlapping = (
        stays.join(other, on="patient_id", how="inner")
        .filter((pl.col("claim_id") != pl.col("_other"))
                & (pl.col("admit_date") < pl.col("_o_discharge"))
                & (pl.col("_o_admit") < pl.col("discharge_date")))
        .group_by("claim_id").agg(pl.len().alias("n_overlapping_stays"))
    )
    # Strictly inside the stay: visits on admission or discharge day are ordinary.
    during = (
        claims.filter(pl.col("setting") != "inpatient")
        .select("claim_id", "patient_id", "service_date")
        .join(other, on="patient_id", how="inner")
        .filter((pl.col("service_date") > pl.col("_o_admit"))
                & (pl.col("service_date") < pl.col("_o_discharge")))
    )
    during_flag = during.group_by("claim_id").agg(pl.lit(1).alias("during_inpatient_stay"))
    during_count = during.group_by("_other").agg(pl.len().alias("n_outpatient_during_stay")) \
        .rename({"_other": "claim_id"})
    return (
        readmit.join(overlapping, on="claim_id", how="left")
        .join(during_count, on="claim_id", how="left")
        .join(during_flag.select(pl.col("claim_id"), "during_inpatient_stay"), on="claim_id",
              how="full", coalesce=True)
    )


# Peer groups of the claim-level ratios / robust z: prefix -> (keys, value column).
_PEER_GROUPS = {
    "amount_dx": (["setting", "diagnosis_code", "_fac_level"], "total_amount"),
    "amount_drg": (["drg_group", "_fac_level"], "_drg_amount"),
    "drg_weight_dx": (["diagnosis_code"], "drg_weight"),
    "_drug_amt": (["item_code", "_fac_level"], "amount"),
}
_drg_amount = pl.when(pl.col("drg_group").is_not_null()).then(pl.col("total_amount"))


def _hashed_peer_stats(source: pl.LazyFrame, keys: list[str], value: str, prefix: str,
                       candidates: pl.LazyFrame | None = None
                       ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`peer_stats` of ``source`` with bounded memory: exact medians need every value
    of a group in memory, so the rows are first reduced to a 64-bit hash of the group keys
    plus the value (16 bytes a row instead of the string keys); the few distinct key
    combinations are mapped back afterwards (collision odds ~groups²/2^65, negligible).
    ``candidates`` : a small frame of ``keys`` holding every combination present in
    ``source`` (default: read them from ``source``, one more pass over it)."""
    key_hash = pl.struct(keys).hash(_PARTITION_SEED).alias("_key")
    narrow = source.select(key_hash, value).collect(engine="streaming").lazy()
    names = (source if candidates is None else candidates).select(*keys, key_hash).unique() \
        .collect(engine="streaming")
    by_hash, overall = pl.collect_all([robust_stats(narrow, ["_key"], value, prefix),
                                       robust_stats(narrow, [], value, "_g")])
    group = names.join(by_hash, on="_key", how="inner").drop("_key")
    return group, overall


def _reference_stats(tables: Tables, reference_window: Window
                     ) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """Peer statistics of every claim-level peer group, fitted on ``reference_window``.

    Computed once, one group at a time over narrow hashed projections (see
    :func:`_hashed_peer_stats`), so the partitions of :func:`claim_features` share them
    and memory stays far below that of the claim frame.

    Returns
    -------
    prefix -> (group statistics, one-row global statistics), see
    :func:`medfraud.features._common.peer_stats`.
    """
    facilities = tables.facilities.select("facility_id", pl.col("level").alias("_fac_level"))
    claims = (tables.claims.filter(in_window("service_date", reference_window))
              .join(facilities, on="facility_id", how="left")
              .with_columns(_drg_amount.alias("_drg_amount")))
    drug_lines = (tables.claim_lines.filter(pl.col("item_type") == "drug")
                  .select("claim_id", "item_code", "amount")
                  .join(claims.select("claim_id", "_fac_level"), on="claim_id", how="inner"))
    # Every (drug, level) pair that can occur (a null level: facility missing from the
    # table), without a second pass over the line join.
    levels = facilities.select("_fac_level")
    no_level = pl.LazyFrame({"_fac_level": [None]}).cast(levels.collect_schema())
    drug_levels = (tables.claim_lines.filter(pl.col("item_type") == "drug").select("item_code")
                   .unique().join(pl.concat([levels, no_level]).unique(), how="cross"))
    return {prefix: _hashed_peer_stats(drug_lines if prefix == "_drug_amt" else claims,
                                       keys, value, prefix,
                                       drug_levels if prefix == "_drug_amt" else None)
            for prefix, (keys, value) in _PEER_GROUPS.items()}


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


def _apply(frame: pl.LazyFrame, stats: dict[str, tuple[pl.DataFrame, pl.DataFrame]],
           prefix: str) -> pl.LazyFrame:
    keys, value = _PEER_GROUPS[prefix]
    group, overall = stats[prefix]
    return apply_peer_stats(frame, group.lazy(), overall.lazy(), keys, value, prefix)


def _doctor_day(tables: Tables, window: Window) -> pl.DataFrame:
    """(doctor, service date) pairs of ``window`` billed at two or more facilities.

    Returns
    -------
    DataFrame with _doctor_hash (UInt64 hash of doctor_id), service_date and
    doctor_facilities_same_day (UInt32 >= 2).  Every other doctor-day of a claim has
    exactly one facility; keeping only the exceptions (and hashed ids) keeps this small.
    """
    return (tables.claims.filter(in_window("service_date", window))
            .select(pl.col("doctor_id").hash(_PARTITION_SEED).alias("_doctor_hash"),
                    "service_date", pl.col("facility_id").hash(_PARTITION_SEED).alias("_f"))
            .unique()
            .group_by("_doctor_hash", "service_date")
            .agg(pl.len().alias("doctor_facilities_same_day"))
            .filter(pl.col("doctor_facilities_same_day") > 1)
            .collect(engine="streaming"))


def claim_features(tables: Tables, window: Window, reference_window: Window,
                   params: FeatureParams, reference: ClaimReference | None = None
                   ) -> pl.DataFrame:
    """Claim-level frame: claim_id, context columns, CLAIM_FEATURES and HELPER_COLUMNS.

    Parameters
    ----------
    tables : data tables of the dataset.
    window : service dates of the claims to describe (inclusive), None for all.
    reference_window : service dates whose claims fit the peer-group medians and scales.
    params : thresholds.
    reference : precomputed statistics of ``reference_window`` (see
        :func:`fit_claim_reference`); fitted here when None.

    Returns
    -------
    DataFrame, one row per claim with ``service_date`` in ``window`` (in no particular
    order); feature columns are Float64 or integer and never null.

    Notes
    -----
    Windows of more than :data:`CLAIMS_PER_PARTITION` claims are processed in partitions by
    patient hash: every feature of a claim depends on its own patient's claims only, except
    the peer statistics and the doctor's facilities per day, which are computed once over
    the whole window (narrow projections) and joined into every partition.
    """
    n_claims = tables.claims.filter(in_window("service_date", window)).select(pl.len()) \
        .collect().item()
    n_parts = max(1, math.ceil(n_claims / CLAIMS_PER_PARTITION))
    stats = (reference if reference is not None
             else fit_claim_reference(tables, reference_window)).stats
    doctor_day = _doctor_day(tables, window)
    if n_parts == 1:
        return _claim_partition(tables, _claims_base(tables, window), tables.claim_lines,
                                params, stats, doctor_day)
    with tempfile.TemporaryDirectory(prefix="medfraud-features-") as tmp:
        sources = _spill_partitions(tables, window, n_parts, Path(tmp))
        parts = [_claim_partition(tables, claims, lines, params, stats, doctor_day)
                 for claims, lines in sources]
    return pl.concat(parts, how="vertical", rechunk=False)


def _spill_partitions(tables: Tables, window: Window, n_parts: int, folder: Path
                      ) -> list[tuple[pl.LazyFrame, pl.LazyFrame]]:
    """Split the claim base and the claim lines of ``window`` into ``n_parts`` patient
    partitions written under ``folder`` (one streaming pass each, lz4 Parquet).

    Reading the whole claim and line tables once per partition would make the cost grow
    with the square of the claims; one pass keeps it linear.

    Returns
    -------
    One (claims base, raw claim lines) pair of lazy scans per non-empty partition.
    """
    part = (pl.col("patient_id").hash(_PARTITION_SEED) % n_parts).alias("_part")
    sink = {"compression": "lz4", "mkdir": True, "engine": "streaming"}
    _claims_base(tables, window).with_columns(part).sink_parquet(
        pl.PartitionBy(folder / "claims", key="_part", include_key=False), **sink)
    owners = (tables.claims.filter(in_window("service_date", window))
              .select("claim_id", part))
    tables.claim_lines.join(owners, on="claim_id", how="inner").sink_parquet(
        pl.PartitionBy(folder / "lines", key="_part", include_key=False), **sink)
    sources = []
    for index in range(n_parts):
        claims_dir = folder / "claims" / f"_part={index}"
        if not claims_dir.is_dir():
            continue  # no patient hashed here
        lines_dir = folder / "lines" / f"_part={index}"
        lines = (pl.scan_parquet(lines_dir / "*.parquet", hive_partitioning=False)
                 if lines_dir.is_dir() else tables.claim_lines.clear())
        sources.append((pl.scan_parquet(claims_dir / "*.parquet", hive_partitioning=False),
                        lines))
    return sources


def _claim_partition(tables: Tables, claims_base: pl.LazyFrame, raw_lines: pl.LazyFrame,
                     params: FeatureParams, stats: dict[str, tuple[pl.DataFrame, pl.DataFrame]],
                     doctor_day: pl.DataFrame) -> pl.DataFrame:
    """Claim features of the claims of ``claims_base`` (one patient partition, or the whole
    window), whose lines are among ``raw_lines``; see :func:`claim_features`."""
    # The joined claim and line bases feed a dozen branches; materialising them once is
    # cheaper than relying on common-subplan elimination across all of them.
    claims = claims_base.collect(engine="streaming").lazy()
    lines = _lines_base(tables, claims, params, raw_lines).collect(engine="streaming").lazy()

    c = _apply(claims, stats, "amount_dx")
    c = _apply(c.with_columns(_drg_amount.alias("_drg_amount")), stats, "amount_drg")
    c = _apply(c, stats, "drg_weight_dx")

    day = ["patient_id", "service_date"]
    night_start, night_end = params.night_hours
    hour = pl.col("settled_at").dt.hour()
    los = days_between("discharge_date", "admit_date")
    card_day = claims.group_by(day).agg(
        pl.len().alias("card_claims_same_day"),
        pl.col("region").n_unique().alias("card_regions_same_day"),
        pl.col("facility_id").n_unique().alias("card_facilities_same_day"),
    )
    c = (
        c.join(card_day, on=day, how="left")
        .with_columns(pl.col("doctor_id").hash(_PARTITION_SEED).alias("_doctor_hash"))
        .join(doctor_day.lazy(), on=["_doctor_hash", "service_date"], how="left")
        .join(_drug_line_features(lines, stats, params), on="claim_id", how="left")
        .join(_refill_overlap(lines), on="claim_id", how="left")
        .join(_line_features(lines), on="claim_id", how="left")
        .join(_stay_features(claims), on="claim_id", how="left")
        .with_columns(
            pl.col("total_amount").log1p().alias("log_amount"),
            pl.when(pl.col("doctor_id").is_not_null())
            .then(pl.col("doctor_facilities_same_day").fill_null(1))
            .alias("doctor_facilities_same_day"),
            pl.when(pl.col("total_amount") > 0).then(pl.col("fund_paid") / pl.col("total_amount"))
            .otherwise(0.0).alias("fund_share"),
            days_between("service_date", "death_date").clip(lower_bound=0).fill_null(0)
            .alias("days_after_death"),
            pl.col("cross_region").cast(pl.Int8).alias("cross_region"),
            pl.col("_roster_facility").is_not_null().cast(pl.Int8).alias("doctor_on_duty"),
            (pl.col("_roster_facility").is_not_null()
             & (pl.col("_roster_facility") != pl.col("facility_id"))).cast(pl.Int8)
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
        .with_columns(
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
    )
    return c.select(["claim_id", *CONTEXT_COLUMNS, *CLAIM_FEATURES, *HELPER_COLUMNS]).collect()
