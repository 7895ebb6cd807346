"""Peer-group deviation of entities: robust z of key features within comparable entities.

Doctors are compared with doctors of the same department at facilities of the same level,
pharmacies with pharmacies of the same region, facilities with facilities of the same
level.  Medians and scales come from the *reference* entity frames (the training window)
so scoring a test window uses only statistics learned before it.
"""

from __future__ import annotations

import polars as pl

from medfraud.features._common import Tables, attach_peer_stats
from medfraud.schema import LEVEL_ID

PEER_KEYS = {
    "doctor": ["department", "_fac_level"],
    "pharmacy": ["region"],
    "facility": ["level"],
}

PEER_SOURCE_FEATURES = {
    "doctor": ["n_claims", "amount_sum", "amount_mean", "deg_patients", "high_value_share",
               "claims_month_max", "dose_over_share", "days_over_limit_share", "pharmacy_hhi",
               "top_codoctor_shared_share", "drg_weight_mean"],
    "pharmacy": ["n_claims", "amount_sum", "amount_mean", "deg_patients", "high_value_share",
                 "claims_month_max", "doctor_hhi", "inv_max_oversold_ratio"],
    "facility": ["n_claims", "amount_sum", "amount_mean", "deg_patients", "drg_weight_mean",
                 "readmission_rate", "inpatient_share", "off_duty_share"],
}

PEER_FEATURES = {level: [f"peer_z_{f}" for f in feats]
                 for level, feats in PEER_SOURCE_FEATURES.items()}


def _peer_keys(tables: Tables, level: str) -> pl.LazyFrame:
    if level == "doctor":
        return tables.doctors.select("doctor_id", "facility_id", "department").join(
            tables.facilities.select("facility_id", pl.col("level").alias("_fac_level")),
            on="facility_id", how="left").drop("facility_id")
    if level == "pharmacy":
        return tables.pharmacies.select("pharmacy_id", "region")
    return tables.facilities.select("facility_id", "level")


def peer_deviation(frames: dict[str, pl.LazyFrame], reference: dict[str, pl.LazyFrame],
                   tables: Tables) -> dict[str, pl.LazyFrame]:
    """Add ``PEER_FEATURES[level]`` to the doctor, pharmacy and facility frames.

    Parameters
    ----------
    frames : level -> lazy entity frame to describe (must hold PEER_SOURCE_FEATURES).
    reference : level -> lazy entity frame the peer statistics are fitted on.
    tables : data tables (doctor department, facility level, pharmacy region).

    Returns
    -------
    ``frames`` with the peer columns added at each level of PEER_KEYS present in it;
    robust z is 0 where the peer group has no spread.
    """
    out = dict(frames)
    for level, keys in PEER_KEYS.items():
        if level not in frames:
            continue
        id_col = LEVEL_ID[level]
        key_frame = _peer_keys(tables, level)
        frame = frames[level].join(key_frame, on=id_col, how="left")
        ref = reference[level].join(key_frame, on=id_col, how="left")
        for feature in PEER_SOURCE_FEATURES[level]:
            frame = attach_peer_stats(frame, ref, keys, feature, f"_p_{feature}")
            frame = frame.rename({f"_p_{feature}_z": f"peer_z_{feature}"}) \
                .drop(f"_p_{feature}_ratio")
        out[level] = frame.drop(keys)
    return out
