"""Features: claim, entity, peer-group and graph-derived features as polars frames.

:func:`build_features` is the one entry point; it reads only the data tables of the
contract (never the label tables) and returns a :class:`FeatureSet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl
import polars.selectors as cs

from medfraud.dataset import Dataset
from medfraud.features._common import FeatureParams, Tables, check_window
from medfraud.features.claims import (
    CLAIM_FEATURES,
    CONTEXT_COLUMNS,
    ClaimReference,
    claim_features,
    fit_claim_reference,
)
from medfraud.features.entities import (
    ENTITY_FEATURES,
    ENTITY_LEVELS,
    KEY_COLUMN,
    entity_features,
    entity_keys,
)
from medfraud.features.frameset import FeatureSet
from medfraud.features.graph_tabular import GRAPH_FEATURES, graph_features
from medfraud.features.peers import PEER_FEATURES, peer_deviation
from medfraud.partitions import PatientPartitions
from medfraud.partitions import sort_by_column as _sort_by_column
from medfraud.schema import LEVEL_ID, LEVELS, DataError, check_values

__all__ = ["ClaimReference", "FeatureParams", "FeatureSet", "build_features", "claim_reference",
           "feature_columns"]


def feature_columns(level: str) -> list[str]:
    """Names of the feature columns :func:`build_features` produces at ``level``."""
    if level == "claim":
        return list(CLAIM_FEATURES)
    return (ENTITY_FEATURES[level] + GRAPH_FEATURES[level] + PEER_FEATURES.get(level, []))


def _entity_stage(claims: pl.DataFrame, tables: Tables, window, levels, params,
                  patients: pl.LazyFrame | None = None):
    """Entity + graph frames (lazy) for ``levels`` from the claim frame (``patients``: the
    registry rows of its patients, default all).

    Both group by integer keys of the ids (:func:`entity_keys`) and join on them; the keys
    are dropped once the id columns are attached.
    """
    keyed, ids = entity_keys(claims)
    entity = entity_features(keyed, tables, window, levels, ids, patients)
    graph = graph_features(keyed, params, levels, ids)
    return {lvl: entity[lvl].join(graph[lvl], on=KEY_COLUMN[lvl], how="left")
            .drop(KEY_COLUMN[lvl]) for lvl in levels}


def _collect(frames: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    # One level at a time: collecting them together would hold every level's group-by
    # state over the claim frame at once (the peak of a build), for little shared work.
    return {name: frame.collect() for name, frame in frames.items()}


def _claim_frame(tables: Tables, *args) -> pl.DataFrame:
    """:func:`claim_features` (same arguments), a bad ``setting`` reported as
    :class:`~medfraud.schema.DataError`.

    The claim frame stores ``setting`` as an Enum of the contract's settings: on a dataset
    that skipped ``medfraud validate``, an unknown one fails that cast deep in the query
    with polars' message.  It is reported as the validator reports it (table, column, bad
    rows, an example row) instead.
    """
    try:
        return claim_features(tables, *args)
    except pl.exceptions.InvalidOperationError as exc:
        problems = check_values("claims", tables.claims, ("setting",))
        if problems:
            raise DataError(problems) from exc
        raise


def claim_reference(dataset: Dataset, reference_window: tuple[date, date] | None
                    ) -> ClaimReference:
    """Fit the claim-level peer statistics of ``reference_window`` once, to pass as
    ``build_features(..., claim_reference=...)`` on many later calls.

    Parameters
    ----------
    dataset : a valid dataset (label tables are never read).
    reference_window : (first, last) service date, inclusive; None = every claim.
    """
    check_window(reference_window, "reference_window")
    return fit_claim_reference(Tables(dataset), reference_window)


def build_features(dataset: Dataset, window: tuple[date, date] | None = None, *,
                   levels: Sequence[str] = LEVELS,
                   reference_window: tuple[date, date] | None = None,
                   params: FeatureParams | None = None,
                   claim_reference: ClaimReference | None = None,
                   partitions: PatientPartitions | None = None) -> FeatureSet:
    """Compute features of the claims whose service_date lies in ``window``.

    Parameters
    ----------
    dataset : a dataset that passed ``medfraud.schema.validate``; label tables are never read.
    window : (first, last) service date, inclusive; None = every claim.
    levels : levels to return, any of ``medfraud.schema.LEVELS``.
    reference_window : window whose claims fit the peer-group statistics (medians, robust
        scales); default ``window``.  Pass the training window when featurising a test
        window so no test-period information reaches the statistics.
    params : thresholds, :class:`FeatureParams` defaults when None.
    claim_reference : claim peer statistics fitted beforehand by :func:`claim_reference`
        (on this dataset or on a snapshot of it); ``reference_window`` then defaults to,
        and must equal, its window.
    partitions : this dataset split by patient (:func:`medfraud.partitions.split_by_patient`),
        shared with the audit rules of the same window: the claim features read it instead
        of splitting the window themselves, when it holds every claim of the window with
        the roster's facility (a split made with ``roster=True``, the default).

    Returns
    -------
    FeatureSet with one frame per requested level: the id column, the numeric feature
    columns listed in ``columns[level]`` (never null; Float32 or integer at the claim and
    patient levels, Float64 or integer at the other entity levels) and, for claims,
    the context columns patient_id, doctor_id, facility_id, pharmacy_id, service_date,
    setting, total_amount, fund_paid.  Entity frames hold every entity with at least one
    claim in ``window``; rows are sorted by id.
    """
    levels = tuple(levels)
    unknown = [lvl for lvl in levels if lvl not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {list(levels)}")
    check_window(window)
    check_window(reference_window, "reference_window")
    params = params or FeatureParams()
    if claim_reference is not None:
        if reference_window is not None and reference_window != claim_reference.window:
            raise ValueError(f"reference_window {reference_window} differs from the window of "
                             f"claim_reference {claim_reference.window}")
        reference_window = claim_reference.window
    reference_window = window if reference_window is None else reference_window
    tables = Tables(dataset)
    if claim_reference is None:
        claim_reference = fit_claim_reference(tables, reference_window)

    patient_parts: list[pl.DataFrame] = []

    def patient_level(claims_of_patients: pl.DataFrame, patients: pl.LazyFrame) -> None:
        # A patient's claims all lie in one partition: its features are aggregated there,
        # over a partition's frame instead of the window's (the group-bys' hash tables
        # then fit the caches, ~25 % less CPU on 5M claims).
        # Stored Float32 like the claim features: the patient frame grows with the data
        # (1M patients at 10M claims) and lives through the rules; the other entity levels
        # are small and feed the peer statistics, and stay Float64.
        if claims_of_patients.height:
            stage = _entity_stage(claims_of_patients, tables, window, ("patient",), params,
                                  patients)
            patient_parts.append(stage["patient"].with_columns(cs.float().cast(pl.Float32))
                                 .collect())

    # The claim frame feeds every level: materialise it once instead of recomputing per level.
    claims = _claim_frame(tables, window, reference_window, params, claim_reference,
                          partitions, patient_level if "patient" in levels else None)
    if claims.height == 0:
        raise ValueError(f"{dataset.path}: no claims with service_date in window {window}")
    collected: dict[str, pl.DataFrame] = {}
    if patient_parts:
        collected["patient"] = pl.concat(patient_parts)
    # The other entity levels span patients: aggregated over the whole claim frame.
    peer_levels = tuple(lvl for lvl in ENTITY_LEVELS if lvl in levels and lvl != "patient")
    if peer_levels:
        # Entity and graph aggregates are collected before the peer step: peer statistics
        # join each frame with itself many times, which is cheap on materialised frames.
        collected |= _collect(_entity_stage(claims, tables, window, peer_levels, params))
        if reference_window == window:
            reference = collected
        else:
            ref_claims = _claim_frame(tables, reference_window, reference_window,
                                      params, claim_reference, partitions)
            reference = _collect(_entity_stage(ref_claims, tables, reference_window,
                                               peer_levels, params))
        collected = _collect(peer_deviation(
            {lvl: f.lazy() for lvl, f in collected.items()},
            {lvl: f.lazy() for lvl, f in reference.items()}, tables))

    out: dict[str, pl.DataFrame] = {}
    columns: dict[str, list[str]] = {}
    for level in levels:
        id_col = LEVEL_ID[level]
        cols = feature_columns(level)
        if level == "claim":
            # Drop the last reference to the unsorted frame so the sort can free it as it goes.
            # Column lookup by name (no query plan: ~10x cheaper than select on a few claims).
            claim_frame = [claims[[id_col, *CONTEXT_COLUMNS, *cols]]]
            del claims
            if claim_frame[0].get_column(id_col).is_sorted():
                out[level] = claim_frame.pop()  # claim_features kept claim_id order
            else:
                out[level] = _sort_by_column(claim_frame.pop(), id_col)
        else:
            out[level] = collected[level].select(id_col, *cols).sort(id_col)
        columns[level] = cols
    return FeatureSet(frames=out, columns=columns, window=window,
                      meta={"reference_window": reference_window, "params": params,
                            "dataset_digest": dataset.digest})
