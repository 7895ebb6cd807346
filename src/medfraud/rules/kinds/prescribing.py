"""Drug-line kinds (事前 prescribing checks): who may get a drug, where, how much, how long.

Each kind judges drug lines (claim_lines with item_type ``drug`` joined with ``drugs``)
and reports one hit per claim; ``amount_at_stake`` is the amount of the offending lines
or, where only part of a line is excessive, that excess part.  Kinds judging a line by
itself (and its claim, patient, facility) read the window's lines only
(``since=inputs.start``); the refill kind alone reads the history.
"""

from __future__ import annotations

from datetime import date

import polars as pl
from pydantic import Field

from medfraud.rules.inputs import (RuleInputs, age_at, cum_max_in_runs, is_in, mapping_frame,
                                    per_claim, shift_in_runs, value_frame)
from medfraud.rules.registry import KindParams, register_kind

_DRUG_TABLES = ("claims", "claim_lines", "drugs")
_days = pl.col("days_supply").fill_null(1).cast(pl.Float64).clip(lower_bound=1.0)


class NoParams(KindParams):
    """The kind reads its thresholds from the drug catalogue; nothing to set."""


@register_kind("sex_restriction", tables=_DRUG_TABLES + ("patients",), params=NoParams)
def sex_restriction(inputs: RuleInputs, params: NoParams) -> pl.LazyFrame:
    """限性别: a drug restricted to one sex (``drugs.sex_restriction``) billed for the other."""
    patients = inputs.table("patients").select("patient_id", "sex")
    # Few drugs are restricted: filter before the join with patients.
    lines = (inputs.drug_lines(since=inputs.start)
             .filter(pl.col("sex_restriction").is_not_null())
             .join(patients, on="patient_id", how="inner"))
    bad = pl.col("sex_restriction").is_not_null() & (pl.col("sex_restriction") != pl.col("sex"))
    return per_claim(lines.filter(bad), pl.col("amount"))


@register_kind("age_restriction", tables=_DRUG_TABLES + ("patients",), params=NoParams)
def age_restriction(inputs: RuleInputs, params: NoParams) -> pl.LazyFrame:
    """限年龄: patient's age on the service date outside ``[min_age, max_age]`` of the drug."""
    patients = inputs.table("patients").select("patient_id", "birth_date")
    lines = (inputs.drug_lines(since=inputs.start)
             .filter(pl.col("min_age").is_not_null() | pl.col("max_age").is_not_null())
             .join(patients, on="patient_id", how="inner")
             .with_columns(age_at(pl.col("birth_date"), pl.col("service_date")).alias("age")))
    bad = (pl.col("age") < pl.col("min_age")).fill_null(False) | (
        pl.col("age") > pl.col("max_age")).fill_null(False)
    return per_claim(lines.filter(bad), pl.col("amount"))


class IndicationParams(KindParams):
    """allowed_diagnoses : drug category -> diagnosis-code prefixes it is reimbursable for.
    Categories absent from the map are unrestricted."""

    allowed_diagnoses: dict[str, list[str]] = Field(default_factory=dict)


@register_kind("indication_restriction", tables=_DRUG_TABLES, params=IndicationParams)
def indication_restriction(inputs: RuleInputs, params: IndicationParams) -> pl.LazyFrame:
    """限适应症: a restricted drug category billed with a diagnosis outside its indications."""
    allowed = mapping_frame(params.allowed_diagnoses, "category", "prefix")
    lines = inputs.drug_lines(since=inputs.start).filter(
        is_in("category", params.allowed_diagnoses))
    # One row per (line, allowed prefix); a line is fine when any prefix matches.
    judged = lines.join(allowed, on="category", how="inner").group_by("claim_id", "line_no").agg(
        pl.col("diagnosis_code").str.starts_with(pl.col("prefix")).any().alias("indicated"),
        pl.col("service_date").first(), pl.col("amount").first())
    return per_claim(judged.filter(~pl.col("indicated")), pl.col("amount"))


@register_kind("facility_level_restriction", tables=_DRUG_TABLES + ("facilities",),
               params=NoParams)
def facility_level_restriction(inputs: RuleInputs, params: NoParams) -> pl.LazyFrame:
    """限医疗机构级别: drug's ``restricted_level`` above the level of the billing facility."""
    facilities = inputs.table("facilities").select("facility_id", "level")
    lines = (inputs.drug_lines(since=inputs.start)
             .filter(pl.col("restricted_level").is_not_null())
             .join(facilities, on="facility_id", how="inner"))
    bad = pl.col("restricted_level") > pl.col("level")
    return per_claim(lines.filter(bad), pl.col("amount"))


class CareSettingParams(KindParams):
    """allowed_settings_by_item_type : item_type -> settings where it may be billed.
    allowed_settings_by_drug_category : drug category -> settings where it may be billed."""

    allowed_settings_by_item_type: dict[str, list[str]] = Field(
        default_factory=lambda: {"bed": ["inpatient"]})
    allowed_settings_by_drug_category: dict[str, list[str]] = Field(default_factory=dict)


@register_kind("care_setting_restriction", tables=("claims", "claim_lines", "drugs"),
               params=CareSettingParams)
def care_setting_restriction(inputs: RuleInputs, params: CareSettingParams) -> pl.LazyFrame:
    """限就医方式: an item billed in a care setting its reimbursement rule excludes."""
    by_type = mapping_frame(params.allowed_settings_by_item_type, "item_type", "allowed")
    by_category = mapping_frame(params.allowed_settings_by_drug_category, "category", "allowed")
    columns = ["claim_id", "line_no", "service_date", "amount", "setting", "allowed"]
    restricted = pl.concat([
        inputs.lines(list(params.allowed_settings_by_item_type), since=inputs.start)
        .join(by_type, on="item_type", how="inner").select(columns),
        inputs.drug_lines(since=inputs.start)
        .filter(is_in("category", params.allowed_settings_by_drug_category))
        .join(by_category, on="category", how="inner").select(columns),
    ])
    judged = restricted.group_by("claim_id", "line_no").agg(
        (pl.col("setting") == pl.col("allowed")).any().alias("allowed"),
        pl.col("service_date").first(), pl.col("amount").first())
    return per_claim(judged.filter(~pl.col("allowed")), pl.col("amount"))


class CourseLimitParams(KindParams):
    """max_days_by_category : drug category -> longest reimbursable course per line (days)."""

    max_days_by_category: dict[str, int] = Field(default_factory=dict)


@register_kind("course_limit", tables=_DRUG_TABLES, params=CourseLimitParams)
def course_limit(inputs: RuleInputs, params: CourseLimitParams) -> pl.LazyFrame:
    """限支付疗程: ``days_supply`` above the category's payable course; the excess days pay."""
    limits = value_frame(params.max_days_by_category, "category", "max_days", pl.Float64)
    lines = inputs.drug_lines(since=inputs.start).join(limits, on="category", how="inner")
    over = lines.filter(_days > pl.col("max_days"))
    return per_claim(over, pl.col("amount") * (_days - pl.col("max_days")) / _days)


class DoseParams(KindParams):
    """tolerance : multiple of ``max_daily_units × days_supply`` allowed before a hit (≥ 1)."""

    tolerance: float = Field(1.0, ge=1.0)


@register_kind("dose_over_label", tables=_DRUG_TABLES, params=DoseParams)
def dose_over_label(inputs: RuleInputs, params: DoseParams) -> pl.LazyFrame:
    """超说明书用量: quantity above ``max_daily_units × days_supply``; the excess units pay."""
    label_max = pl.col("max_daily_units") * _days
    over = inputs.drug_lines(since=inputs.start).filter(
        pl.col("quantity") > label_max * params.tolerance)
    return per_claim(over, (pl.col("quantity") - label_max) * pl.col("unit_price"))


class QuantityDaysParams(KindParams):
    """Longest supply per prescription (days): ordinary, emergency (doctor's department in
    ``emergency_departments``) and chronic-disease patients (``patients.chronic``)."""

    ordinary_days: int = Field(7, ge=1)
    emergency_days: int = Field(3, ge=1)
    chronic_days: int = Field(84, ge=1)
    emergency_departments: list[str] = Field(default_factory=lambda: ["emergency"])


@register_kind("quantity_over_days_limit", tables=_DRUG_TABLES + ("patients", "doctors"),
               params=QuantityDaysParams)
def quantity_over_days_limit(inputs: RuleInputs, params: QuantityDaysParams) -> pl.LazyFrame:
    """超量开药: days supplied above 7 (ordinary), 3 (emergency) or 84 (chronic) days."""
    patients = inputs.table("patients").select("patient_id", "chronic")
    doctors = inputs.table("doctors").select("doctor_id", "department")
    shortest = min(params.ordinary_days, params.chronic_days,
                   params.emergency_days if params.emergency_departments else params.ordinary_days)
    # Most prescriptions are within every limit: drop them before joining patients, doctors.
    lines = (inputs.drug_lines(since=inputs.start).filter(_days > shortest)
             .join(patients, on="patient_id", how="inner"))
    limit = pl.when(pl.col("chronic")).then(params.chronic_days)
    if params.emergency_departments:
        # Without emergency departments the doctors are not needed: one join less.
        lines = lines.join(doctors, on="doctor_id", how="left")
        limit = (pl.when(is_in("department", params.emergency_departments))
                 .then(params.emergency_days)
                 .when(pl.col("chronic")).then(params.chronic_days))
    limit = limit.otherwise(params.ordinary_days).cast(pl.Float64)
    over = lines.with_columns(limit.alias("max_days")).filter(_days > pl.col("max_days"))
    return per_claim(over, pl.col("amount") * (_days - pl.col("max_days")) / _days)


class RefillParams(KindParams):
    """tolerance_days : a refill this many days before the previous supply runs out is fine.
    tolerance_fraction : … or up to this share of the previous fill's days (long chronic
        supplies are routinely renewed a few days early); the larger tolerance applies."""

    tolerance_days: int = Field(3, ge=0)
    tolerance_fraction: float = Field(0.0, ge=0, lt=1)


def _judged_keys(start: date) -> pl.Expr:
    """Boolean: the line's ``key_hash`` is also that of a line dated ``start`` or later.
    Only those keys can have a refill inside the window; a scoring batch's history is
    mostly other patients' and drugs' (a hash collision only keeps more lines)."""
    return pl.col("key_hash").is_in(
        pl.col("key_hash").filter(pl.col("service_date") >= start).implode())


@register_kind("overlapping_refill", tables=_DRUG_TABLES, params=RefillParams)
def overlapping_refill(inputs: RuleInputs, params: RefillParams) -> pl.LazyFrame:
    """重复开药: same patient and drug dispensed again before the earlier supply ran out.

    The earlier supply ends at ``service_date + days_supply`` of any previous fill (the
    latest such end, so a long fill is not forgotten after a short one).  The overlapping
    days' share of the new line is at stake.
    """
    key = ["patient_id", "item_code"]
    same_key = (pl.col("patient_id") == pl.col("patient_id").shift(1)) & (
        pl.col("item_code") == pl.col("item_code").shift(1))
    fills = (inputs.drug_lines(columns=["claim_id", *key, "service_date", "days_supply",
                                        "amount"])
             .select("claim_id", *key, "service_date", _days.alias("days"), "amount")
             # A 64-bit hash of the key: finds the keys to judge cheaply and sorts the
             # groups together.
             .with_columns(pl.struct(key).hash().alias("key_hash")))
    if inputs.start is not None:
        # Its own filter: the count per key below then runs on the judged keys only.
        fills = fills.filter(_judged_keys(inputs.start))
    # Only a (patient, drug) with two or more lines can be refilled early.
    fills = (fills.filter(pl.len().over("key_hash") > 1)
             .sort("key_hash", "service_date", "claim_id", maintain_order=True,
                   multithreaded=False)
             # One fill per (claim, drug): repeated lines inside a claim are duplicate_charge's
             # case.  Equal keys are adjacent now, so runs are found by comparing neighbours.
             .filter(~(same_key & (pl.col("claim_id") == pl.col("claim_id").shift(1)))
                     .fill_null(False))
             .with_columns((~same_key).fill_null(True).alias("first_fill"))
             # Per run of equal keys: the latest supply end before this fill, and the
             # previous fill's days (whole-column running max / shift masked at run starts).
             .with_columns(shift_in_runs(cum_max_in_runs(
                 pl.col("service_date") + pl.duration(days=pl.col("days").cast(pl.Int64)),
                 pl.col("first_fill")), pl.col("first_fill")).cast(pl.Int32).cast(pl.Date)
                 .alias("covered_until"),
                 shift_in_runs(pl.col("days"), pl.col("first_fill")).alias("previous_days")))
    overlap = (pl.col("covered_until") - pl.col("service_date")).dt.total_days()
    tolerance = pl.max_horizontal(pl.lit(float(params.tolerance_days)),
                                  params.tolerance_fraction * pl.col("previous_days"))
    over = fills.filter(overlap > tolerance)
    return per_claim(over, pl.col("amount") * (overlap.cast(pl.Float64) / pl.col("days"))
                     .clip(upper_bound=1.0))
