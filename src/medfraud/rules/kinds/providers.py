"""Provider kinds: pharmacy stock reconciliation (进销存) and doctors off duty (脱岗)."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from medfraud.partitions import ROSTER_COLUMN, with_roster_facility
from medfraud.rules.inputs import RuleInputs, is_in, per_claim
from medfraud.rules.registry import KindParams, register_kind


class InventoryParams(KindParams):
    """tolerance_fraction, tolerance_units : billed units may exceed purchased units by
    ``purchased × tolerance_fraction + tolerance_units`` (breakage, rounding)."""

    tolerance_fraction: float = Field(0.0, ge=0)
    tolerance_units: float = Field(0.0, ge=0)


@register_kind("inventory_mismatch", level="pharmacy",
               tables=("claims", "claim_lines", "drugs", "pharmacy_purchases"),
               params=InventoryParams)
def inventory_mismatch(inputs: RuleInputs, params: InventoryParams) -> pl.LazyFrame:
    """进销存不符: a pharmacy billed more units of a drug than it ever bought (purchases up to
    the window end, the ``OPENING`` stock row included).

    Judged per (pharmacy, drug) over all history up to the window end; a pharmacy is hit
    when some drug it sold inside the window is short.  At stake: the short units at the
    drug's list price, summed over the pharmacy's short drugs.
    """
    sales = inputs.drug_sales().with_columns(
        (pl.col("last_sold") >= inputs.start if inputs.start else pl.lit(True))
        .alias("sold_in_window"))
    bought = inputs.table("pharmacy_purchases").group_by("pharmacy_id", "drug_code").agg(
        pl.col("quantity").sum().alias("bought"))
    prices = inputs.table("drugs").select("drug_code", "unit_price")
    short = (sales.join(bought, on=["pharmacy_id", "drug_code"], how="left")
             .join(prices, on="drug_code", how="left")
             .with_columns(pl.col("bought").fill_null(0.0))
             .filter(pl.col("sold_in_window") & (
                 pl.col("sold") > pl.col("bought") * (1 + params.tolerance_fraction)
                 + params.tolerance_units)))
    return short.group_by("pharmacy_id").agg(
        ((pl.col("sold") - pl.col("bought")) * pl.col("unit_price").fill_null(0.0)).sum()
        .cast(pl.Float64).alias("amount_at_stake"))


class OffDutyParams(KindParams):
    """settings : claims whose signing doctor must be on duty that day.
    check_facility : also flag claims billed at another facility than the roster's.
    two_facilities : when a doctor bills at two facilities on one day, flag the claims at
        facilities other than the doctor's registered one (``doctors.facility_id``)."""

    settings: list[str] = Field(default_factory=lambda: ["outpatient", "inpatient"])
    check_facility: bool = True
    two_facilities: bool = True


@register_kind("doctor_off_duty", tables=("claims", "duty_roster", "doctors"),
               params=OffDutyParams)
def doctor_off_duty(inputs: RuleInputs, params: OffDutyParams) -> pl.LazyFrame:
    """脱岗: a claim signed by a doctor absent from ``duty_roster`` that day (or rostered at
    another facility), or by one doctor at two facilities the same day; the claim's whole
    amount is at stake."""
    # A claim is judged with its doctor's claims of the same day only: no history needed.
    columns = ["claim_id", "doctor_id", "facility_id", "setting", "service_date", "total_amount"]
    if inputs.roster_column is not None:  # joined by the patient split
        claims = inputs.window_claims([*columns, inputs.roster_column]) \
            .rename({inputs.roster_column: "duty_facility"})
    else:
        roster = inputs.table("duty_roster")
        if inputs.start is not None:
            # Only the window's days can match a window claim: a smaller join.
            roster = roster.filter(pl.col("date") >= inputs.start)
        claims = with_roster_facility(inputs.window_claims(columns), roster) \
            .rename({ROSTER_COLUMN: "duty_facility"})
    judged = claims.filter(is_in("setting", params.settings))
    bad = pl.col("duty_facility").is_null()
    if params.check_facility:
        bad = bad | (pl.col("duty_facility") != pl.col("facility_id"))
    if params.two_facilities:
        home = inputs.table("doctors").select("doctor_id",
                                              pl.col("facility_id").alias("home_facility"))
        several = inputs.several_facility_days(tuple(params.settings)) \
            .with_columns(pl.lit(True).alias("_several"))
        judged = (judged.join(several, on=["doctor_id", "service_date"], how="left")
                  .join(home, on="doctor_id", how="left"))
        bad = bad | (pl.col("_several").fill_null(False)
                     & (pl.col("facility_id") != pl.col("home_facility")).fill_null(True))
    return per_claim(judged.filter(bad), pl.col("total_amount"))
