"""Card-use kinds: dead, borrowed or over-used insurance cards (冒名就医, 频繁刷卡)."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from medfraud.rules.inputs import RuleInputs, age_at, is_in, per_claim
from medfraud.rules.registry import KindParams, register_kind


class DeathParams(KindParams):
    """grace_days : services this many days after death are tolerated (settlement lag)."""

    grace_days: int = Field(0, ge=0)


@register_kind("service_after_death", tables=("claims", "patients"), params=DeathParams)
def service_after_death(inputs: RuleInputs, params: DeathParams) -> pl.LazyFrame:
    """死亡后就医: a service dated after the patient's death; the whole claim is at stake."""
    deaths = inputs.table("patients").select("patient_id", "death_date").filter(
        pl.col("death_date").is_not_null())
    claims = inputs.window_claims(["claim_id", "patient_id", "service_date", "total_amount"]
                                  ).join(deaths, on="patient_id", how="inner")
    late = (pl.col("service_date") - pl.col("death_date")).dt.total_days() > params.grace_days
    return per_claim(claims.filter(late), pl.col("total_amount"))


class CardFrequencyParams(KindParams):
    """max_claims_per_month_at_pharmacy : card swipes per calendar month at one pharmacy.
    max_facilities_per_day : distinct facilities one card may visit on one day."""

    max_claims_per_month_at_pharmacy: int = Field(4, ge=1)
    max_facilities_per_day: int = Field(3, ge=1)


@register_kind("card_frequency", tables=("claims",), params=CardFrequencyParams)
def card_frequency(inputs: RuleInputs, params: CardFrequencyParams) -> pl.LazyFrame:
    """频繁刷卡: a card swiped more than 4 times a month at one pharmacy (the swipes past the
    4th are hits) or at more facilities in one day than allowed (all that day's claims)."""
    claims = inputs.claims(["claim_id", "patient_id", "pharmacy_id", "facility_id", "setting",
                            "service_date", "settled_at", "total_amount"])
    month = pl.col("service_date").dt.truncate("1mo")
    swipe_key = pl.struct("patient_id", "pharmacy_id", month).hash()
    swipes = (claims.filter(pl.col("pharmacy_id").is_not_null())
              # Counting by a 64-bit hash of the key can only over-count (a collision
              # merges keys), so it safely narrows the rows the exact count runs on.
              .filter(pl.len().over(swipe_key) > params.max_claims_per_month_at_pharmacy)
              .sort("settled_at", "claim_id", multithreaded=False)
              .with_columns(pl.int_range(1, pl.len() + 1).over("patient_id", "pharmacy_id", month)
                            .alias("nth"))
              .filter(pl.col("nth") > params.max_claims_per_month_at_pharmacy))
    # Pharmacy sales carry the prescribing facility, not a visit: count only visits.
    visits = (claims.filter(is_in("setting", ("outpatient", "inpatient")))
              # More facilities than allowed needs more visits than that (hash count: a
              # superset of the days to judge exactly).
              .filter(pl.len().over(pl.struct("patient_id", "service_date").hash())
                      > params.max_facilities_per_day)
              .with_columns(pl.col("facility_id").n_unique().over("patient_id", "service_date")
                            .alias("facilities"))
              .filter(pl.col("facilities") > params.max_facilities_per_day))
    cols = ["claim_id", "service_date", "total_amount"]
    hits = pl.concat([swipes.select(cols), visits.select(cols)]).unique("claim_id")
    return per_claim(hits, pl.col("total_amount"))


class DistantRegionsParams(KindParams):
    """exclude_settings : settings not tied to a place (online consultations).
    min_regions : distinct regions in one day that make the card suspicious.
    away_claims_only : flag only that day's claims settled outside the patient's home
        region (``cross_region``), the ones a borrowed card makes; else every claim."""

    exclude_settings: list[str] = Field(default_factory=lambda: ["online"])
    min_regions: int = Field(2, ge=2)
    away_claims_only: bool = False


@register_kind("same_day_distant_regions", tables=("claims",), params=DistantRegionsParams)
def same_day_distant_regions(inputs: RuleInputs, params: DistantRegionsParams) -> pl.LazyFrame:
    """异地同日: one card used on the same day in different regions (a borrowed card);
    that day's claims (or only those away from home) are hits with their whole amount."""
    # A card's claims of one day are judged together: no history needed.
    claims = (inputs.window_claims(["claim_id", "patient_id", "setting", "service_date",
                                    "region", "cross_region", "total_amount"])
              .filter(~is_in("setting", params.exclude_settings))
              # Only days with two or more claims can span regions (hash count: a superset).
              .filter(pl.len().over(pl.struct("patient_id", "service_date").hash()) > 1)
              .with_columns(pl.col("region").n_unique().over("patient_id", "service_date")
                            .alias("regions")))
    suspicious = pl.col("regions") >= params.min_regions
    if params.away_claims_only:
        suspicious = suspicious & pl.col("cross_region")
    return per_claim(claims.filter(suspicious), pl.col("total_amount"))


class IdentityParams(KindParams):
    """max_age : oldest plausible age (years) on the service date."""

    max_age: int = Field(105, ge=1)


@register_kind("implausible_identity", tables=("claims", "patients"), params=IdentityParams)
def implausible_identity(inputs: RuleInputs, params: IdentityParams) -> pl.LazyFrame:
    """虚构身份: a service for a card whose holder cannot exist that day: not yet born or
    older than ``max_age``.  The whole claim is at stake."""
    claims = inputs.window_claims(["claim_id", "patient_id", "service_date", "total_amount"])
    # Only a card born after the first claim or more than max_age × 365 days before the
    # last can be hit (an age above max_age is at least (max_age + 1) × 365 days): join
    # those few patients instead of every one.
    span = claims.select(pl.col("service_date").min().alias("first"),
                         pl.col("service_date").max().alias("last"))
    births = (inputs.table("patients").select("patient_id", "birth_date")
              .join(span, how="cross")
              .filter((pl.col("birth_date") > pl.col("first"))
                      | (pl.col("birth_date") < pl.col("last")
                         - pl.duration(days=365 * params.max_age)))
              .select("patient_id", "birth_date"))
    claims = claims.join(births, on="patient_id", how="inner")
    impossible = (pl.col("service_date") < pl.col("birth_date")) | (
        age_at(pl.col("birth_date"), pl.col("service_date")) > params.max_age)
    return per_claim(claims.filter(impossible), pl.col("total_amount"))
