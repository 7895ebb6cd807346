"""Ground truth for training and evaluation, read only from the label tables.

Features and rules never import this module: labels flow only into detector ``fit``
(supervised families) and into ``medfraud.evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from medfraud.dataset import Dataset
from medfraud.schema import LEVEL_ID

# The level at which each typology is judged (where the fraud "lives").
TYPOLOGY_LEVEL = {
    "collusion_ring": "doctor",
    "phantom_patient": "patient",
    "over_prescription": "claim",
    "split_hospitalization": "claim",
    "upcoding": "claim",
    "frequent_card_swiping": "patient",
    "ghost_bed": "claim",
    "inventory_mismatch": "pharmacy",
    "doctor_absent": "claim",
    "duplicate_billing": "claim",
}


@dataclass
class Labels:
    """Label tables of a dataset.

    Attributes
    ----------
    claims : claim_id, typology, ring_id — one row per (fraudulent claim, typology).
    entities : entity_type, entity_id, typology, ring_id.
    audited : entity_type, entity_id, audited_on, is_fraud, typology — the partial sample.
    """

    claims: pl.DataFrame
    entities: pl.DataFrame
    audited: pl.DataFrame

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Labels:
        if not dataset.labels_available():
            raise FileNotFoundError(f"{dataset.path} has no label tables (labels_claims, "
                                    "labels_entities, audited)")
        return cls(dataset.read("labels_claims"), dataset.read("labels_entities"),
                   dataset.read("audited"))

    def positives(self, level: str, typology: str | None = None) -> pl.DataFrame:
        """Distinct positive ids at ``level`` (column ``LEVEL_ID[level]``), optionally one typology."""
        id_col = LEVEL_ID[level]
        if level == "claim":
            frame = self.claims
            if typology:
                frame = frame.filter(pl.col("typology") == typology)
            return frame.select("claim_id").unique()
        frame = self.entities.filter(pl.col("entity_type") == level)
        if typology:
            frame = frame.filter(pl.col("typology") == typology)
        return frame.select(pl.col("entity_id").alias(id_col)).unique()

    def target(self, level: str, ids: pl.Series, typology: str | None = None,
               source: str = "full") -> pl.Series:
        """Binary target aligned with ``ids``, shape (n,).

        ``source="full"``: 1 for every labelled positive, 0 otherwise (Int8, no nulls).
        ``source="audited"``: 1/0 for audited rows, null for unaudited (learning from
        partial labels); ``typology`` then restricts the positives to that typology.
        """
        id_col = LEVEL_ID[level]
        frame = pl.DataFrame({id_col: ids})
        if source == "full":
            pos = self.positives(level, typology).with_columns(pl.lit(1, pl.Int8).alias("y"))
            return frame.join(pos, on=id_col, how="left")["y"].fill_null(0)
        if source != "audited":
            raise ValueError(f"source must be 'full' or 'audited', got {source!r}")
        audited = self.audited.filter(pl.col("entity_type") == level)
        is_pos = pl.col("is_fraud")
        if typology:
            is_pos = is_pos & (pl.col("typology") == typology)
        audited = audited.select(pl.col("entity_id").alias(id_col), is_pos.cast(pl.Int8).alias("y"))
        return frame.join(audited, on=id_col, how="left")["y"]
