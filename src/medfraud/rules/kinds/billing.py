"""Billing kinds (事中 settlement checks): duplicated lines, capped frequencies, DRG scores."""

from __future__ import annotations

import functools
from datetime import date
from typing import Literal

import polars as pl
from pydantic import Field

from medfraud.rules.inputs import RuleInputs, is_in, mapping_frame, per_claim, value_frame
from medfraud.rules.registry import KindParams, register_kind


class DuplicateParams(KindParams):
    """item_types : line types that must not repeat.
    settings : care settings checked.
    scope : ``claim`` (the same line twice in one claim) or ``patient_day`` (twice for one
        patient, facility and day, across claims).
    identical_only : lines must also match in quantity and unit price to be duplicates."""

    item_types: list[str] = Field(default_factory=lambda: ["drug", "exam", "material"])
    settings: list[str] = Field(
        default_factory=lambda: ["outpatient", "inpatient", "pharmacy", "online"])
    scope: Literal["claim", "patient_day"] = "claim"
    identical_only: bool = True


@register_kind("duplicate_charge", tables=("claims", "claim_lines"), params=DuplicateParams)
def duplicate_charge(inputs: RuleInputs, params: DuplicateParams) -> pl.LazyFrame:
    """重复收费: the same item billed twice, in one claim or for one patient, facility and day.

    Every copy after the first (by claim id, line number) is a hit; its amount pays.
    Inpatient claims legitimately repeat bed and treatment lines (one per day), so the
    default item types leave those out.
    """
    key = (["claim_id"] if params.scope == "claim"
           else ["patient_id", "facility_id", "service_date"]) + ["item_type", "item_code"]
    if params.identical_only:
        key += ["quantity", "unit_price"]
    # A 64-bit hash of the key finds the few candidate repeats cheaply; the exact
    # comparison then runs on those candidates only.
    candidates = pl.len().over(pl.struct(key).hash()) > 1
    # Copies share a claim or a day: the window's lines hold every copy of a window line.
    if params.scope == "claim":
        # Copies in one claim share its context (setting, date): narrow the bare lines
        # before joining the claims, so only the candidates are joined.
        lines = inputs.lines(params.item_types, narrow=candidates, since=inputs.start)
    else:
        lines = inputs.lines(params.item_types, since=inputs.start).filter(candidates)
    lines = (lines.filter(is_in("setting", params.settings))
             .sort("claim_id", "line_no", multithreaded=False)
             .with_columns((~pl.struct(key).is_first_distinct()).alias("copy")))
    return per_claim(lines.filter(pl.col("copy")), pl.col("amount"))


class FrequencyParams(KindParams):
    """max_quantity_by_item_type : item_type -> most units per patient, item code and period.
    period : polars truncation interval of the period (``1d``, ``1w``, ``1mo``).
    bed_days_within_stay : also flag bed lines billing more days than the stay lasted."""

    max_quantity_by_item_type: dict[str, float] = Field(default_factory=dict)
    period: str = "1d"
    bed_days_within_stay: bool = True


@register_kind("frequency_limit", tables=("claims", "claim_lines"), params=FrequencyParams)
def frequency_limit(inputs: RuleInputs, params: FrequencyParams) -> pl.LazyFrame:
    """限定频次: an item billed more often than allowed per period, or more bed days than
    days in hospital; the units above the cap pay at the line's unit price."""
    caps = value_frame(params.max_quantity_by_item_type, "item_type", "cap", pl.Float64)
    # A window line's period starts on or after the window start's period: lines of
    # claims before that cannot count towards its cap.
    lines = inputs.lines(list(params.max_quantity_by_item_type),
                         since=_period_start(inputs.start, params.period)
                         ).join(caps, on="item_type")
    period_key = ["patient_id", "item_code", pl.col("service_date").dt.truncate(params.period)]
    capped = (lines.sort("service_date", "claim_id", "line_no", multithreaded=False)
              .with_columns(pl.col("quantity").cum_sum().over(period_key).alias("running"))
              # Units of this line beyond the cap, counting earlier lines of the period first.
              .with_columns((pl.col("running") - pl.col("cap")).clip(lower_bound=0)
                            .clip(upper_bound=pl.col("quantity")).alias("excess"))
              .filter(pl.col("excess") > 0)
              .select("claim_id", "service_date", (pl.col("excess") * pl.col("unit_price"))
                      .alias("at_stake")))
    parts = [capped]
    if params.bed_days_within_stay:
        stays = inputs.claims(["claim_id", "admit_date", "discharge_date"])
        beds = (inputs.lines(["bed"], since=inputs.start).join(stays, on="claim_id")
                .group_by("claim_id").agg(
                    pl.col("service_date").first(), pl.col("quantity").sum(),
                    pl.col("unit_price").mean(),
                    # Admission and discharge day count as one bed day together.
                    (pl.col("discharge_date") - pl.col("admit_date")).dt.total_days().first()
                    .clip(lower_bound=1).cast(pl.Float64).alias("stay_days"))
                .filter(pl.col("quantity") > pl.col("stay_days"))
                .select("claim_id", "service_date",
                        ((pl.col("quantity") - pl.col("stay_days")) * pl.col("unit_price"))
                        .alias("at_stake")))
        parts.append(beds)
    return per_claim(pl.concat(parts), pl.col("at_stake"))


@functools.lru_cache(maxsize=64)
def _period_start(day: date | None, period: str) -> date | None:
    """First day of the ``period`` (polars truncation interval) holding ``day``."""
    if day is None:
        return None
    return pl.select(pl.lit(day).dt.truncate(period)).item()


class UpcodingParams(KindParams):
    """quantile, ratio : hit when ``drg_weight > ratio × quantile(weights of the diagnosis)``.
    min_cases : diagnoses with fewer stays in history are not judged by weight.
    allowed_groups : diagnosis-code prefix -> DRG groups it may be coded to (optional).
    rare_group_share : also hit a stay whose DRG group makes up less than this share of its
        diagnosis's stays and weighs more than the diagnosis's typical weight (0: off).
    typical : the diagnosis's typical weight, used for the amount at stake."""

    quantile: float = Field(0.9, gt=0, lt=1)
    ratio: float = Field(1.2, gt=0)
    min_cases: int = Field(10, ge=1)
    allowed_groups: dict[str, list[str]] = Field(default_factory=dict)
    rare_group_share: float = Field(0.0, ge=0, lt=1)
    typical: Literal["median", "mean"] = "median"


@register_kind("drg_upcoding", tables=("claims",), params=UpcodingParams)
def drg_upcoding(inputs: RuleInputs, params: UpcodingParams) -> pl.LazyFrame:
    """高套分值: a stay's DRG weight far above its diagnosis's usual weight, or a DRG group
    outside the diagnosis's allowed set.  At stake: the share of the claim above the
    diagnosis's typical weight, ``total × (1 − typical / weight)``.

    Reference weights come from every stay up to the window end, the claim included:
    a diagnosis is judged against its peers across all facilities (with the scoring
    model's peer stays, see :meth:`RuleInputs.drg_reference_stays`).
    """
    stays = inputs.drg_reference_stays(["claim_id", "service_date", "diagnosis_code", "drg_group",
                                        "drg_weight", "total_amount"]
                                       ).filter(pl.col("drg_weight").is_not_null())
    typical = (pl.col("drg_weight").median() if params.typical == "median"
               else pl.col("drg_weight").mean())
    by_diagnosis = stays.with_columns(
        pl.len().over("diagnosis_code").alias("cases"),
        pl.len().over("diagnosis_code", "drg_group").alias("group_cases"),
        pl.col("drg_weight").quantile(params.quantile, interpolation="linear")
        .over("diagnosis_code").alias("high"),
        typical.over("diagnosis_code").alias("typical")).filter(pl.col("judged"))
    heavy = (pl.col("cases") >= params.min_cases) & (
        pl.col("drg_weight") > params.ratio * pl.col("high"))
    if params.rare_group_share:
        heavy = heavy | ((pl.col("cases") >= params.min_cases)
                         & (pl.col("group_cases") < params.rare_group_share * pl.col("cases"))
                         & (pl.col("drg_weight") > pl.col("typical")))
    hits = by_diagnosis.filter(heavy).select("claim_id", "service_date", "drg_weight", "typical",
                                             "total_amount")
    if params.allowed_groups:
        allowed = mapping_frame(params.allowed_groups, "prefix", "group")
        restricted = (by_diagnosis.join(allowed, how="cross")
                      .filter(pl.col("diagnosis_code").str.starts_with(pl.col("prefix")))
                      .group_by("claim_id").agg(
                          (pl.col("drg_group") == pl.col("group")).any().alias("allowed"),
                          pl.col("service_date", "drg_weight", "typical", "total_amount").first())
                      .filter(~pl.col("allowed")).drop("allowed"))
        hits = pl.concat([hits, restricted]).unique("claim_id")
    share = (1 - pl.col("typical") / pl.col("drg_weight")).clip(lower_bound=0)
    return per_claim(hits, pl.col("total_amount") * share)
