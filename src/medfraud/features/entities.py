"""Entity-level features (patient, doctor, pharmacy, facility) aggregated from claims.

Whole-window aggregates (counts, amounts, shares of suspicious claim-level signals) and
per-month aggregates (monthly max / mean / std of claim counts and amounts), plus the
pharmacy inventory balance (进销存).  Input is the lazy claim-level frame of
:mod:`medfraud.features.claims`.
"""

from __future__ import annotations


import polars as pl

from medfraud.features._common import Tables, Window
from medfraud.schema import LEVEL_ID

ENTITY_LEVELS = ("patient", "doctor", "pharmacy", "facility")

_COMMON = [
    "n_claims", "amount_sum", "amount_mean", "amount_max", "fund_share", "high_value_share",
    "weekend_share", "night_share", "refill_overlap_ratio", "cross_region_share",
    "inpatient_share", "readmission_rate", "drg_weight_mean", "amount_dx_z_mean",
    "dose_over_share", "days_over_limit_share", "restriction_hit_share", "dup_line_share",
    "off_duty_share", "during_stay_share", "after_death_claims", "n_active_days",
    "claims_month_max", "claims_month_mean", "claims_month_std", "amount_month_max",
    "amount_month_mean", "n_months",
]
_PATIENT = ["max_claims_one_pharmacy_month", "max_facilities_one_day", "max_regions_one_day",
            "age_at_first_claim"]
_PHARMACY = ["inv_max_oversold_ratio", "inv_drugs_oversold", "inv_never_purchased_value_share",
             "inv_billed_purchased_ratio", "price_mix_ratio"]

ENTITY_FEATURES = {
    "patient": _COMMON + _PATIENT,
    "doctor": list(_COMMON),
    "pharmacy": _COMMON + _PHARMACY,
    "facility": list(_COMMON),
}


def _share(flag: pl.Expr) -> pl.Expr:
    return flag.cast(pl.Float64).mean()


def _window_aggregates(claims: pl.LazyFrame, id_col: str) -> pl.LazyFrame:
    amount = pl.col("total_amount")
    inpatient = pl.col("is_inpatient").sum()
    drg = pl.col("drg_weight").filter(pl.col("drg_weight") > 0)
    restriction = (pl.col("sex_restriction_hits") + pl.col("age_restriction_hits")
                   + pl.col("level_restriction_hits")) > 0
    return claims.group_by(id_col).agg(
        pl.len().alias("n_claims"),
        amount.sum().alias("amount_sum"),
        amount.mean().alias("amount_mean"),
        amount.max().alias("amount_max"),
        pl.when(amount.sum() > 0).then(pl.col("fund_paid").sum() / amount.sum()).otherwise(0.0)
        .alias("fund_share"),
        pl.when(pl.col("_drug_amount").sum() > 0)
        .then(pl.col("_high_value_amount").sum() / pl.col("_drug_amount").sum()).otherwise(0.0)
        .alias("high_value_share"),
        _share(pl.col("weekend")).alias("weekend_share"),
        _share(pl.col("night")).alias("night_share"),
        pl.when(pl.col("n_drug_lines").sum() > 0)
        .then(pl.col("n_refill_overlap_lines").sum() / pl.col("n_drug_lines").sum())
        .otherwise(0.0).alias("refill_overlap_ratio"),
        _share(pl.col("cross_region")).alias("cross_region_share"),
        _share(pl.col("is_inpatient")).alias("inpatient_share"),
        pl.when(inpatient > 0).then(pl.col("readmitted_within_limit").sum() / inpatient)
        .otherwise(0.0).alias("readmission_rate"),
        drg.mean().fill_null(0.0).alias("drg_weight_mean"),
        pl.col("amount_dx_z").mean().alias("amount_dx_z_mean"),
        _share(pl.col("dose_ratio_max") > 1).alias("dose_over_share"),
        _share(pl.col("days_over_limit_max") > 0).alias("days_over_limit_share"),
        _share(restriction).alias("restriction_hit_share"),
        _share((pl.col("dup_lines_in_claim") + pl.col("dup_lines_across_claims")) > 0)
        .alias("dup_line_share"),
        _share(pl.col("doctor_on_duty") == 0).alias("off_duty_share"),
        _share(pl.col("during_inpatient_stay") > 0).alias("during_stay_share"),
        (pl.col("days_after_death") > 0).sum().alias("after_death_claims"),
        pl.col("service_date").n_unique().alias("n_active_days"),
    )


def _monthly_aggregates(claims: pl.LazyFrame, id_col: str) -> pl.LazyFrame:
    # Months without claims are not counted: "mean per active month".
    monthly = claims.group_by(id_col, "_month").agg(
        pl.len().alias("_n"), pl.col("total_amount").sum().alias("_amount"))
    return monthly.group_by(id_col).agg(
        pl.col("_n").max().alias("claims_month_max"),
        pl.col("_n").mean().cast(pl.Float64).alias("claims_month_mean"),
        pl.col("_n").std(ddof=0).fill_null(0.0).alias("claims_month_std"),
        pl.col("_amount").max().alias("amount_month_max"),
        pl.col("_amount").mean().alias("amount_month_mean"),
        pl.len().alias("n_months"),
    )


def _patient_extras(claims: pl.LazyFrame) -> pl.LazyFrame:
    per_pharmacy_month = (
        claims.filter(pl.col("pharmacy_id").is_not_null())
        .group_by("patient_id", "pharmacy_id", "_month").agg(pl.len().alias("_n"))
        .group_by("patient_id").agg(pl.col("_n").max().alias("max_claims_one_pharmacy_month"))
    )
    per_day = claims.group_by("patient_id").agg(
        pl.col("card_facilities_same_day").max().alias("max_facilities_one_day"),
        pl.col("card_regions_same_day").max().alias("max_regions_one_day"),
    )
    return per_day.join(per_pharmacy_month, on="patient_id", how="left")


def _patient_identity(claims: pl.LazyFrame, tables: Tables) -> pl.LazyFrame:
    """Age in years at the patient's first claim of the window, from the registry.

    Identity checks need it: an age over ~105 or below 0 (born after the first claim) is an
    impossible registry record, the mark of an invented insured person.
    """
    first = claims.group_by("patient_id").agg(pl.col("service_date").min().alias("_first"))
    return first.join(tables.patients.select("patient_id", "birth_date"), on="patient_id",
                      how="left").select(
        "patient_id",
        ((pl.col("_first") - pl.col("birth_date")).dt.total_days() / 365.25).alias("age_at_first_claim"))


def inventory_features(tables: Tables, window: Window) -> pl.LazyFrame:
    """Pharmacy stock balance (进销存) at the end of ``window``, aggregated over drugs.

    Billed quantities come from drug lines of claims with a pharmacy, purchases from
    ``pharmacy_purchases`` (the "OPENING" supplier row is the opening stock).  Both are
    cumulative from the start of the data up to the window's last day: a stock balance is a
    running quantity, and no date after the window is read.

    Returns
    -------
    LazyFrame with pharmacy_id and the ``inv_*`` / ``price_mix_ratio`` columns (Float64).
    """
    end = window[1] if window is not None else None
    claims = tables.claims.filter(pl.col("pharmacy_id").is_not_null())
    purchases = tables.pharmacy_purchases
    if end is not None:
        claims = claims.filter(pl.col("service_date") <= end)
        purchases = purchases.filter(pl.col("purchase_date") <= end)
    prices = tables.drugs.select(pl.col("drug_code"), pl.col("unit_price").alias("_cat_price"))
    billed = (
        tables.claim_lines.filter(pl.col("item_type") == "drug")
        .join(claims.select("claim_id", "pharmacy_id"), on="claim_id", how="inner")
        .group_by("pharmacy_id", pl.col("item_code").alias("drug_code"))
        .agg(pl.col("quantity").sum().alias("_billed"), pl.col("amount").sum().alias("_value"))
    )
    bought = purchases.group_by("pharmacy_id", "drug_code").agg(
        pl.col("quantity").sum().alias("_bought"))
    balance = (
        billed.join(bought, on=["pharmacy_id", "drug_code"], how="full", coalesce=True)
        .join(prices, on="drug_code", how="left")
        .with_columns(pl.col("_billed").fill_null(0.0), pl.col("_value").fill_null(0.0),
                      pl.col("_bought").fill_null(0.0))
    )
    excess = pl.col("_billed") - pl.col("_bought")
    value = pl.col("_value").sum()
    billed_qty, bought_qty = pl.col("_billed").sum(), pl.col("_bought").sum()
    billed_price = (pl.col("_billed") * pl.col("_cat_price")).sum() / billed_qty
    bought_price = (pl.col("_bought") * pl.col("_cat_price")).sum() / bought_qty
    return balance.group_by("pharmacy_id").agg(
        # A drug never purchased divides by 1 unit so the ratio stays finite.
        (excess / pl.col("_bought").clip(lower_bound=1.0)).max().clip(lower_bound=0.0)
        .alias("inv_max_oversold_ratio"),
        (excess > 0).sum().alias("inv_drugs_oversold"),
        pl.when(value > 0).then(pl.col("_value").filter(pl.col("_bought") <= 0).sum() / value)
        .otherwise(0.0).alias("inv_never_purchased_value_share"),
        (billed_qty / bought_qty.clip(lower_bound=1.0)).alias("inv_billed_purchased_ratio"),
        pl.when((billed_qty > 0) & (bought_qty > 0)).then(billed_price / bought_price)
        .otherwise(1.0).alias("price_mix_ratio"),
    )


def entity_features(claims: pl.LazyFrame, tables: Tables, window: Window,
                    levels: tuple[str, ...] = ENTITY_LEVELS) -> dict[str, pl.LazyFrame]:
    """Lazy entity frames by level: id column + ``ENTITY_FEATURES[level]``.

    Parameters
    ----------
    claims : lazy claim-level frame from :func:`medfraud.features.claims.claim_features`.
    tables : data tables (for the pharmacy inventory).
    window : the window of ``claims`` (for the inventory balance date).
    levels : entity levels to build.

    Returns
    -------
    level -> LazyFrame with one row per entity having at least one claim in ``claims``.
    """
    out = {}
    for level in levels:
        id_col = LEVEL_ID[level]
        own = claims.filter(pl.col(id_col).is_not_null())
        frame = _window_aggregates(own, id_col).join(_monthly_aggregates(own, id_col),
                                                     on=id_col, how="left")
        if level == "patient":
            frame = (frame.join(_patient_extras(own), on=id_col, how="left")
                     .join(_patient_identity(own, tables), on=id_col, how="left"))
        if level == "pharmacy":
            frame = frame.join(inventory_features(tables, window), on=id_col, how="left")
        names = ENTITY_FEATURES[level]
        out[level] = frame.select(id_col, *[pl.col(n).fill_null(0) for n in names])
    return out


__all__ = ["ENTITY_FEATURES", "ENTITY_LEVELS", "entity_features", "inventory_features"]
