"""The ``rules`` family: the audit-rule engine's hits as a ranking detector.

Input is ``FeatureSet.rule_hits`` (from :func:`medfraud.rules.evaluate_rules`), one row
per hit with columns ``level, id, rule_id, reason_code, severity, amount_at_stake``.
Each hit contributes ``severity_weight × log1p(amount_at_stake)`` (plus
``severity_weight × base`` so zero-money hits still count); a row's score is the sum of
its hits' contributions.  Hits at the scored level count directly; claim hits roll up to
an entity level through the claim frame's context column (``patient_id``,
``doctor_id``, ``pharmacy_id``, ``facility_id``).  Rows without hits score 0.  Reasons
are the distinct reason codes ordered by their total contribution to the row.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from medfraud.detectors.base import SCORE_SCHEMA, Detector, register
from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels
from medfraud.schema import LEVEL_ID

HIT_COLUMNS = ("level", "id", "rule_id", "reason_code", "severity", "amount_at_stake")
DEFAULT_SEVERITY_WEIGHTS = {"low": 1.0, "medium": 2.0, "high": 4.0, "critical": 8.0,
                            "suspicious": 1.0, "violation": 4.0}


@register("rules")
class RulesDetector(Detector):
    """Rank rows by the severity and money of their audit-rule hits.

    Parameters
    ----------
    level : claim, patient, doctor, pharmacy or facility.
    severity_weights : weight per severity label, used when ``severity`` is a string;
        a numeric ``severity`` is its own weight.
    base : money-free part of each hit's contribution (in log1p-yuan units).
    roll_up_claims : at entity levels, also count the hits of the entity's claims.
    n_reasons : reason codes kept per row (0 = all).
    """

    def __init__(self, level: str = "claim", severity_weights: dict[str, float] | None = None,
                 base: float = 1.0, roll_up_claims: bool = True, n_reasons: int = 5):
        super().__init__(level, severity_weights=dict(severity_weights or DEFAULT_SEVERITY_WEIGHTS),
                         base=base, roll_up_claims=roll_up_claims, n_reasons=n_reasons)

    def fit(self, features: FeatureSet, labels: Labels | None = None) -> RulesDetector:
        """Nothing to learn: records the level (rules are fixed, configured in the catalogue)."""
        self.fitted_level_ = self.level
        return self

    def _hits(self, features: FeatureSet) -> pl.LazyFrame:
        hits = features.rule_hits
        if hits is None:
            raise ValueError(f"{self.name}: FeatureSet.rule_hits is None; evaluate the audit rules "
                             "(medfraud.rules.evaluate_rules) before scoring with the rules detector")
        missing = [c for c in HIT_COLUMNS if c not in hits.columns]
        if missing:
            raise KeyError(f"{self.name}: rule_hits lacks column(s) {missing}; expected {list(HIT_COLUMNS)}")
        hits = hits.lazy()
        severity_dtype = features.rule_hits.schema["severity"]
        if severity_dtype.is_numeric():
            weight = pl.col("severity").cast(pl.Float64)
        else:
            weights = self.params["severity_weights"]
            unknown = (features.rule_hits.filter(~pl.col("severity").is_in(list(weights)))
                       ["severity"].unique().sort())
            if unknown.len():
                raise ValueError(f"{self.name}: rule_hits.severity has {unknown.len()} value(s) without a "
                                 f"weight, e.g. {unknown[0]!r}; known: {sorted(weights)}")
            weight = pl.col("severity").replace_strict(weights, return_dtype=pl.Float64)
        return hits.with_columns(
            (weight * (pl.col("amount_at_stake").fill_null(0.0).clip(0.0).log1p() + self.params["base"]))
            .alias("contribution"))

    def score(self, features: FeatureSet) -> pl.DataFrame:
        """Score every row at ``level``: summed hit contributions, reason codes by contribution."""
        self._check_fitted("fitted_level_")
        id_col = LEVEL_ID[self.level]
        hits = self._hits(features)
        own = hits.filter(pl.col("level") == self.level).select("id", "reason_code", "contribution")
        parts = [own]
        if self.level != "claim" and self.params["roll_up_claims"]:
            if "claim" not in features.frames or id_col not in features.frame("claim").columns:
                raise KeyError(f"{self.name}: rolling claim hits up to {self.level} needs the claim frame "
                               f"with context column {id_col!r}")
            claim_to_entity = features.frame("claim").lazy().select(
                pl.col("claim_id").alias("id"), pl.col(id_col).alias("entity"))
            rolled = (hits.filter(pl.col("level") == "claim").join(claim_to_entity, on="id", how="inner")
                      .filter(pl.col("entity").is_not_null())
                      .select(pl.col("entity").alias("id"), "reason_code", "contribution"))
            parts.append(rolled)
        by_reason = (pl.concat(parts).group_by("id", "reason_code")
                     .agg(pl.col("contribution").sum()))
        per_row = by_reason.group_by("id").agg(
            pl.col("contribution").sum().alias("score"),
            pl.col("reason_code").sort_by(["contribution", "reason_code"], descending=[True, False])
            .alias("reasons"))
        if self.params["n_reasons"]:
            per_row = per_row.with_columns(pl.col("reasons").list.head(self.params["n_reasons"]))
        ids = features.ids(self.level).cast(pl.String).alias("id").to_frame().lazy()
        out = (ids.join(per_row.with_columns(pl.col("id").cast(pl.String)), on="id", how="left",
                        maintain_order="left")
               .select("id", pl.col("score").fill_null(0.0).cast(pl.Float64),
                       pl.col("reasons").fill_null(pl.lit([], dtype=pl.List(pl.String)))
                       .cast(pl.List(pl.String)))
               .collect())
        return out.select([pl.col(c).cast(t) for c, t in SCORE_SCHEMA.items()])

    def to_state(self) -> dict[str, Any]:
        self._check_fitted("fitted_level_")
        return {"family": self.family, "params": self.get_params()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RulesDetector:
        return cls(**state["params"]).fit(FeatureSet({}, {}))
