"""Inpatient-stay kinds (事后 review): split, overlapping and ghost (挂床) stays."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from medfraud.rules.inputs import (RuleInputs, cum_max_in_runs, is_in, per_claim, run_starts,
                                    shift_in_runs)
from medfraud.rules.registry import KindParams, register_kind

_STAY = ["claim_id", "patient_id", "service_date", "admit_date", "discharge_date",
         "diagnosis_code", "total_amount"]


_IS_STAY = ((pl.col("setting") == "inpatient") & pl.col("admit_date").is_not_null()
            & pl.col("discharge_date").is_not_null())
# A patient's stay count by a 64-bit hash of patient_id: a collision can only over-count,
# so ``> 1`` keeps a superset of the patients with two or more stays.
_REPEAT_PATIENT = pl.len().over(pl.col("patient_id").hash()) > 1


def _stays(inputs: RuleInputs, extra: list[str] | None = None, *, repeated: bool = False
           ) -> pl.LazyFrame:
    """Inpatient stays (claims with both stay dates); with ``repeated`` only those of
    patients with two or more stays -- the only ones a stay can be compared with another
    of the same patient.  Most stays are a patient's only one (scoring calls carry the
    DRG peer stays of other patients), so sorting them is skipped.  ``extra``: more claim
    columns to keep."""
    stays = inputs.claims(_STAY + (extra or []) + ["setting"]).filter(_IS_STAY).drop("setting")
    return stays.filter(_REPEAT_PATIENT) if repeated else stays


class ReadmissionParams(KindParams):
    """max_gap_days : readmission within this many days of discharge is a split stay.
    diagnosis_prefix_len : leading diagnosis-code characters that must match (0: any).
    flag_index_stay : also flag the first stay of the split pair (with 0 yuan at stake: the
        money is the second case's payment)."""

    max_gap_days: int = Field(15, ge=0)
    diagnosis_prefix_len: int = Field(3, ge=0)
    flag_index_stay: bool = True


@register_kind("readmission", tables=("claims",), params=ReadmissionParams)
def readmission(inputs: RuleInputs, params: ReadmissionParams) -> pl.LazyFrame:
    """分解住院: readmitted for the same condition ≤ 15 days after discharge.  The second
    stay's claim is a hit with its whole amount at stake (the case billed twice)."""
    key = pl.col("diagnosis_code").str.slice(0, params.diagnosis_prefix_len) if (
        params.diagnosis_prefix_len) else pl.lit("")
    starts = run_starts("patient_id", "condition")
    stays = (_stays(inputs, repeated=True).with_columns(key.alias("condition"))
             .sort("patient_id", "condition", "admit_date", "claim_id", multithreaded=False)
             .with_columns(shift_in_runs(pl.col("discharge_date"), starts)
                           .alias("previous_discharge"),
                           shift_in_runs(pl.col("claim_id"), starts).alias("index_stay"),
                           shift_in_runs(pl.col("service_date"), starts).alias("index_date")))
    gap = (pl.col("admit_date") - pl.col("previous_discharge")).dt.total_days()
    readmitted = stays.filter(gap.is_between(0, params.max_gap_days))
    parts = [readmitted.select("claim_id", "service_date", pl.col("total_amount").alias("at_stake"))]
    if params.flag_index_stay:
        # The index stay is the previous row of its run: its id and date come along.
        parts.append(readmitted.select(pl.col("index_stay").alias("claim_id"),
                                       pl.col("index_date").alias("service_date"),
                                       pl.lit(0.0).alias("at_stake")))
    return per_claim(pl.concat(parts), pl.col("at_stake"))

@register_kind("overlapping_stays", tables=("claims",), params=KindParams)
def overlapping_stays(inputs: RuleInputs, params: KindParams) -> pl.LazyFrame:
    """重叠住院: a stay admitted before an earlier stay of the same patient was discharged
    (a transfer on the discharge day is allowed); the later stay's amount is at stake."""
    stays = (_stays(inputs, repeated=True)
             .sort("patient_id", "admit_date", "claim_id", multithreaded=False)
             .with_columns(shift_in_runs(
                 cum_max_in_runs(pl.col("discharge_date"), run_starts("patient_id")),
                 run_starts("patient_id")).cast(pl.Int32).cast(pl.Date).alias("busy_until")))
    return per_claim(stays.filter(pl.col("admit_date") < pl.col("busy_until")),
                     pl.col("total_amount"))


class DuringStayParams(KindParams):
    """visit_settings : settings of the visits that contradict being in hospital.
    flag : which claim is the hit: the ghost ``stay``, the ``visit`` or ``both``.
    other_facility_only : only visits at another facility than the stay's count (a consult
        of another department of the same hospital is part of the stay)."""

    visit_settings: list[str] = Field(default_factory=lambda: ["outpatient", "pharmacy"])
    flag: Literal["stay", "visit", "both"] = "both"
    other_facility_only: bool = False


@register_kind("outpatient_during_stay", tables=("claims",), params=DuringStayParams)
def outpatient_during_stay(inputs: RuleInputs, params: DuringStayParams) -> pl.LazyFrame:
    """挂床 / 住院期间门诊: a visit billed strictly between a stay's admission and discharge
    days (the patient was not in the bed billed).  Each hit claim's amount is at stake."""
    stays = _stays(inputs, ["facility_id"]).select(
        "patient_id", pl.col("claim_id").alias("stay_id"), pl.col("facility_id").alias("stay_facility"),
                                  pl.col("service_date").alias("stay_date"), "admit_date",
                                  "discharge_date", pl.col("total_amount").alias("stay_amount"))
    visits = inputs.claims(["claim_id", "patient_id", "facility_id", "setting", "service_date",
                            "total_amount"]).filter(is_in("setting", params.visit_settings))
    pairs = visits.join(stays, on="patient_id", how="inner").filter(
        (pl.col("service_date") > pl.col("admit_date"))
        & (pl.col("service_date") < pl.col("discharge_date")))
    if params.other_facility_only:
        pairs = pairs.filter(pl.col("facility_id") != pl.col("stay_facility"))
    parts = []
    if params.flag in ("stay", "both"):
        parts.append(pairs.group_by("stay_id").agg(pl.col("stay_date").first(),
                                                   pl.col("stay_amount").first())
                     .select(pl.col("stay_id").alias("claim_id"),
                             pl.col("stay_date").alias("service_date"),
                             pl.col("stay_amount").alias("at_stake")))
    if params.flag in ("visit", "both"):
        parts.append(pairs.unique("claim_id").select("claim_id", "service_date",
                                                     pl.col("total_amount").alias("at_stake")))
    return per_claim(pl.concat(parts), pl.col("at_stake"))


class IdleStayParams(KindParams):
    """max_treatment_per_bed_day : treatment units per billed bed day below which the stay
    counts as idle (honest stays treat on most days).
    min_bed_days : shorter stays are not judged."""

    max_treatment_per_bed_day: float = Field(0.4, ge=0)
    min_bed_days: float = Field(3.0, ge=1)


@register_kind("idle_stay", tables=("claims", "claim_lines"), params=IdleStayParams)
def idle_stay(inputs: RuleInputs, params: IdleStayParams) -> pl.LazyFrame:
    """挂床 (空床日): a stay billing bed days with treatment on few of them.  At stake: the bed
    charge of the untreated days, ``bed amount × (1 − treatment units / bed days)``."""
    # A stay's own lines decide: the window's lines suffice.
    per_stay = (inputs.lines(["bed", "treatment"], since=inputs.start)
                .filter(pl.col("setting") == "inpatient")
                .group_by("claim_id").agg(
                    pl.col("service_date").first(),
                    pl.col("quantity").filter(pl.col("item_type") == "bed").sum().alias("bed_days"),
                    pl.col("amount").filter(pl.col("item_type") == "bed").sum().alias("bed_amount"),
                    pl.col("quantity").filter(pl.col("item_type") == "treatment").sum()
                    .alias("treated")))
    ratio = pl.col("treated") / pl.col("bed_days")
    idle = per_stay.filter((pl.col("bed_days") >= params.min_bed_days)
                           & (ratio < params.max_treatment_per_bed_day))
    return per_claim(idle, pl.col("bed_amount") * (1 - ratio).clip(0, 1))
