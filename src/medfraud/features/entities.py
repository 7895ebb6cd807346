"""Entity-level features (patient, doctor, pharmacy, facility) aggregated from claims.

Whole-window aggregates (counts, amounts, shares of suspicious claim-level signals) and
per-month aggregates (monthly max / mean / std of claim counts and amounts), plus the
pharmacy inventory balance (进销存).  Input is the lazy claim-level frame of
:mod:`medfraud.features.claims`.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from medfraud.dataset import PARTITION_SEED
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


# Column of the claim frame holding the group-by key of each entity level (see entity_keys).
KEY_COLUMN = {"patient": "_key_patient", "doctor": "_key_doctor", "pharmacy": "_key_pharmacy",
              "facility": "_key_facility"}


def entity_keys(claims: pl.DataFrame) -> tuple[pl.LazyFrame, dict[str, pl.DataFrame | None]]:
    """``claims`` with the entity key columns ``KEY_COLUMN[level]`` (every entity level).

    A key is the 64-bit hash of the level's id (null where the id is null) when the hashes
    of the distinct ids are all distinct, else the id itself (odds ~n²/2^65), so the
    features stay exact: the entity group-bys, n_unique counts and joins then run on
    integers instead of strings (hashing and joining strings is most of their cost).

    Returns
    -------
    (lazy ``claims`` with the key columns: each query computes only the keys it reads,
    never all four over the whole claim frame at once, which would add 32 bytes a claim to
    the peak memory of a build; level -> DataFrame of (key, id) for every distinct non-null
    id, or None where the key is the id itself).
    """
    keys, ids = [], {}
    for level, key in KEY_COLUMN.items():
        id_col = LEVEL_ID[level]
        distinct = claims.get_column(id_col).drop_nulls().unique()
        hashed = distinct.hash(PARTITION_SEED)
        if _all_distinct(hashed):
            ids[level] = pl.DataFrame([hashed.alias(key), distinct])
            keys.append(pl.when(pl.col(id_col).is_not_null())
                        .then(pl.col(id_col).hash(PARTITION_SEED)).alias(key))
        else:
            ids[level] = None
            keys.append(pl.col(id_col).alias(key))
    return claims.lazy().with_columns(keys), ids


def _all_distinct(hashes: pl.Series) -> bool:
    """True when ``hashes`` (of distinct ids) are all distinct: the hash is then injective."""
    return hashes.n_unique() == hashes.len()


def key_column(level: str, ids: Mapping[str, pl.DataFrame | None] | None) -> str:
    """Group-by column of ``level``: its key column when ``ids`` (from :func:`entity_keys`)
    is given, else the id column."""
    return LEVEL_ID[level] if ids is None else KEY_COLUMN[level]


def attach_ids(frame: pl.LazyFrame, level: str,
               ids: Mapping[str, pl.DataFrame | None] | None) -> pl.LazyFrame:
    """Add the id column of ``level`` to ``frame`` keyed by :func:`key_column` (no-op when
    the key is the id)."""
    if ids is None:
        return frame
    if ids[level] is None:
        return frame.with_columns(pl.col(KEY_COLUMN[level]).alias(LEVEL_ID[level]))
    return frame.join(ids[level].lazy(), on=KEY_COLUMN[level], how="left")


def _window_aggregates(claims: pl.LazyFrame, id_col: str, *extra: pl.Expr) -> pl.LazyFrame:
    """Whole-window aggregates by ``id_col`` (plus the aggregations ``extra``).

    The per-claim flags and filtered values are computed before the group-by and the ratios
    after it, so every aggregation is a plain column reduction (measured about as fast as
    the nested form on polars 2.1; the cost is the ~30 reductions over every claim).
    """
    amount = pl.col("total_amount")
    # Any of the counts, not their sum: UInt16 counts saturate and a sum could wrap.
    restriction = pl.any_horizontal(pl.col("sex_restriction_hits", "age_restriction_hits",
                                           "level_restriction_hits") > 0)
    flags = {
        "weekend_share": pl.col("weekend"),
        "night_share": pl.col("night"),
        "cross_region_share": pl.col("cross_region"),
        "inpatient_share": pl.col("is_inpatient"),
        "dose_over_share": pl.col("dose_ratio_max") > 1,
        "days_over_limit_share": pl.col("days_over_limit_max") > 0,
        "restriction_hit_share": restriction,
        "dup_line_share": pl.any_horizontal(pl.col("dup_lines_in_claim",
                                                   "dup_lines_across_claims") > 0),
        "off_duty_share": pl.col("doctor_on_duty") == 0,
        "during_stay_share": pl.col("during_inpatient_stay") > 0,
    }
    sums = ["total_amount", "fund_paid", "_drug_amount", "_high_value_amount", "n_drug_lines",
            "n_refill_overlap_lines", "is_inpatient", "readmitted_within_limit"]
    extra_inputs = sorted({name for e in extra for name in e.meta.root_names()}
                          - {id_col, *sums, "amount_dx_z", "service_date"})
    # Flags stay Int8 columns or Boolean (bit-packed) expressions, whose means are Float64
    # shares: the select computes these per-claim columns over the whole claim frame
    # before the group-by, and Float64 copies of ten flags were 0.8 GiB a 10M claims.
    per_claim = claims.select(
        id_col, *sums, "amount_dx_z", "service_date", *extra_inputs,
        *[flag.alias(name) for name, flag in flags.items()],
        pl.when(pl.col("drg_weight") > 0).then(pl.col("drg_weight")).alias("_drg"),
        (pl.col("days_after_death") > 0).alias("_after_death"),
    )

    def ratio(numerator: str, denominator: str) -> pl.Expr:
        return (pl.when(pl.col(denominator) > 0).then(pl.col(numerator) / pl.col(denominator))
                .otherwise(0.0))

    return per_claim.group_by(id_col).agg(
        pl.len().alias("n_claims"),
        *[pl.col(c).sum().alias(f"_sum{c}") for c in sums],
        amount.mean().alias("amount_mean"),
        amount.max().alias("amount_max"),
        *[pl.col(name).mean() for name in flags],
        # Claim features are Float32 (claims._NARROW_COLUMNS); entity features Float64.
        pl.col("_drg").cast(pl.Float64).mean().fill_null(0.0).alias("drg_weight_mean"),
        pl.col("amount_dx_z").cast(pl.Float64).mean().alias("amount_dx_z_mean"),
        pl.col("_after_death").sum().alias("after_death_claims"),
        pl.col("service_date").n_unique().alias("n_active_days"),
        *extra,
    ).with_columns(
        pl.col("_sumtotal_amount").alias("amount_sum"),
        ratio("_sumfund_paid", "_sumtotal_amount").alias("fund_share"),
        ratio("_sum_high_value_amount", "_sum_drug_amount").alias("high_value_share"),
        ratio("_sumn_refill_overlap_lines", "_sumn_drug_lines").alias("refill_overlap_ratio"),
        ratio("_sumreadmitted_within_limit", "_sumis_inpatient").alias("readmission_rate"),
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


# Patient aggregates computed in the same group-by as the window aggregates.
_PATIENT_DAY_AGGS = (
    pl.col("card_facilities_same_day").max().alias("max_facilities_one_day"),
    pl.col("card_regions_same_day").max().alias("max_regions_one_day"),
    pl.col("service_date").min().alias("_first"),
)


def _max_claims_one_pharmacy_month(claims: pl.LazyFrame, key: str) -> pl.LazyFrame:
    return (
        claims.filter(pl.col("pharmacy_id").is_not_null())
        .group_by(key, "pharmacy_id", "_month").agg(pl.len().alias("_n"))
        .group_by(key).agg(pl.col("_n").max().alias("max_claims_one_pharmacy_month"))
    )


def _patient_age(frame: pl.LazyFrame, patients: pl.LazyFrame) -> pl.LazyFrame:
    """Age in years at the patient's first claim of the window (``_first``), from the registry.

    Identity checks need it: an age over ~105 or below 0 (born after the first claim) is an
    impossible registry record, the mark of an invented insured person.
    """
    return frame.join(patients.select("patient_id", "birth_date"), on="patient_id",
                      how="left").with_columns(
        ((pl.col("_first") - pl.col("birth_date")).dt.total_days() / 365.25)
        .alias("age_at_first_claim"))


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
                    levels: tuple[str, ...] = ENTITY_LEVELS,
                    ids: Mapping[str, pl.DataFrame | None] | None = None,
                    patients: pl.LazyFrame | None = None) -> dict[str, pl.LazyFrame]:
    """Lazy entity frames by level: id column + ``ENTITY_FEATURES[level]``.

    Parameters
    ----------
    claims : lazy claim-level frame from :func:`medfraud.features.claims.claim_features`.
    tables : data tables (for the pharmacy inventory).
    window : the window of ``claims`` (for the inventory balance date).
    levels : entity levels to build.
    ids : from :func:`entity_keys` when ``claims`` holds its key columns: the aggregates
        then group by the keys, and the frames also hold the key column.
    patients : registry rows holding every patient of ``claims`` (their birth dates);
        default the whole registry.

    Returns
    -------
    level -> LazyFrame with one row per entity having at least one claim in ``claims``.
    """
    out = {}
    for level in levels:
        id_col, key = LEVEL_ID[level], key_column(level, ids)
        extra = _PATIENT_DAY_AGGS if level == "patient" else ()
        # Claims without the level's id form one more group, dropped once aggregated:
        # filtering them out first would copy every column the aggregates read.
        frame = _window_aggregates(claims, key, *extra).filter(pl.col(key).is_not_null()) \
            .join(_monthly_aggregates(claims, key), on=key, how="left")
        if level == "patient":
            frame = frame.join(_max_claims_one_pharmacy_month(claims, key), on=key, how="left")
        frame = attach_ids(frame, level, ids)
        if level == "patient":
            frame = _patient_age(frame, tables.patients if patients is None else patients)
        if level == "pharmacy":
            # Collected apart, on the streaming engine: inside the level's in-memory query
            # the join of every drug line with its claim was materialised (5M claims:
            # 5.2 CPU-s and +0.5-1.2 GiB, streaming 3.4-4.0 CPU-s and +0.3 GiB).
            stock = inventory_features(tables, window).collect(engine="streaming")
            frame = frame.join(stock.lazy(), on=id_col, how="left")
        names = ENTITY_FEATURES[level]
        keep = [] if key == id_col else [key]
        out[level] = frame.select(id_col, *keep, *[pl.col(n).fill_null(0) for n in names])
    return out


__all__ = ["ENTITY_FEATURES", "ENTITY_LEVELS", "KEY_COLUMN", "attach_ids", "entity_features",
           "entity_keys", "inventory_features", "key_column"]
