"""Toy labels and scores with hand-computable metrics, shared by the evaluate tests."""

import numpy as np
import polars as pl

from medfraud.labels import Labels

LABEL_SCHEMAS = (
    {"claim_id": pl.String, "typology": pl.String, "ring_id": pl.String},
    {"entity_type": pl.String, "entity_id": pl.String, "typology": pl.String, "ring_id": pl.String},
    {"entity_type": pl.String, "entity_id": pl.String, "audited_on": pl.Date, "is_fraud": pl.Boolean,
     "typology": pl.String},
)


def make_labels(claims=(), entities=()):
    return Labels(pl.DataFrame([(c, t, None) for c, t in claims], schema=LABEL_SCHEMAS[0], orient="row"),
                  pl.DataFrame([(e, i, t, None) for e, i, t in entities], schema=LABEL_SCHEMAS[1],
                               orient="row"),
                  pl.DataFrame(schema=LABEL_SCHEMAS[2]))


IDS = [f"C{i}" for i in range(10)]
# Two upcoding claims and one duplicate_billing claim among ten.
LABELS = make_labels([("C0", "upcoding"), ("C1", "upcoding"), ("C2", "duplicate_billing")])


def scores_frame(values):
    return pl.DataFrame({"id": IDS, "score": np.asarray(values, dtype=np.float64)})
