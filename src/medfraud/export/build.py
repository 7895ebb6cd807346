"""Assemble a :class:`~medfraud.export.pipeline.ScoringPipeline` from fitted detectors.

:func:`build_pipeline` is the library core of ``medfraud export`` (no MLflow here): given
the dataset, the fitted detectors, the features of the training window and the claims
held out for calibration, it

1. cuts the context snapshot (reference tables + training-window history);
2. scores the training window with every detector: the scores fit each detector's
   reference CDF, and entity-level detectors' normalised scores become the entity
   profiles joined to incoming claims;
3. combines the training claims' normalised scores and sets the bands (top 1 % high,
   top 5 % medium of training claims);
4. scores the held-out claims *through the pipeline itself* (as production would) and
   fits the calibration of the raw score against their labels;
5. reports metrics of the calibrated risk on the held-out claims (for the model card).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from medfraud.dataset import Dataset
from medfraud.export.calibration import Bands, Calibration, ReferenceCDF
from medfraud.export.pipeline import (
    DetectorPart,
    PipelineSettings,
    ScoringPipeline,
    context_tables,
    feature_params_to_json,
)
from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels
from medfraud.schema import LEVEL_ID

# Claim-level families that need a graph at scoring time cannot run on a single claim.
GRAPH_FAMILIES = frozenset({"gnn", "graph_tree", "ring"})


@dataclass
class BuildReport:
    """What :func:`build_pipeline` measured, for the model card.

    Attributes
    ----------
    holdout_metrics : metrics of the calibrated risk on the held-out claims.
    training_claims : number of training-window claims behind the bands.
    skipped : detector name -> why it was left out.
    """

    holdout_metrics: dict[str, Any]
    training_claims: int
    skipped: dict[str, str]


def exportable(name: str, detector: Any) -> str | None:
    """Why ``detector`` cannot be part of a scoring pipeline, or None when it can."""
    if not hasattr(detector, "to_state"):
        return "has no to_state() (no saved state to ship)"
    if detector.level == "claim" and detector.family in GRAPH_FAMILIES:
        return "claim-level graph detector: needs the whole graph at scoring time"
    return None


def build_pipeline(dataset: Dataset, detectors: Mapping[str, Any], train: FeatureSet, *,
                   train_window: tuple[date, date], holdout: pl.DataFrame, labels: Labels,
                   name: str, catalogue_yaml: str | None = None, feature_params: Any = None,
                   weights: Mapping[str, float] | None = None, calibration_method: str = "platt",
                   high_share: float = 0.01, medium_share: float = 0.05,
                   reason_quantile: float = 0.9, max_reasons: int = 5,
                   meta: Mapping[str, Any] | None = None) -> tuple[ScoringPipeline, BuildReport]:
    """Build a scoring pipeline.

    Parameters
    ----------
    dataset : the training dataset (its tables give the context snapshot).
    detectors : name -> fitted detector (to_state() / from_state()).
    train : features of ``train_window`` (with ``rule_hits``, and the graph when a graph
        family is among the detectors), as the detectors were fitted on.
    train_window : (first, last) service date; history and peer reference of scoring.
    holdout : claim_id column of the claims to calibrate on (held out of training).
    labels : labels of ``dataset`` (``source="full"`` targets for the held-out claims).
    name : model name.
    catalogue_yaml : rule catalogue YAML (needed by a ``rules`` detector).
    feature_params : :class:`~medfraud.features.FeatureParams` (None: defaults).
    weights : detector name -> weight in the combined score (default 1 each).
    calibration_method : "platt" or "isotonic".
    high_share, medium_share : training shares of the high and medium bands.
    reason_quantile, max_reasons : see :class:`~medfraud.export.pipeline.PipelineSettings`.
    meta : provenance stored with the pipeline.

    Returns
    -------
    (ScoringPipeline, BuildReport).
    """
    from medfraud.features import FeatureParams

    feature_params = feature_params or FeatureParams()
    weights = dict(weights or {})
    skipped: dict[str, str] = {}
    parts: list[DetectorPart] = []
    training_long = []
    claim_frame = train.frame("claim")
    for order, (det_name, detector) in enumerate(detectors.items()):
        why = exportable(det_name, detector)
        if why:
            skipped[det_name] = why
            continue
        scores = detector.score(train)
        reference = ReferenceCDF.fit(scores["score"].to_numpy())
        u = reference.transform(scores["score"].to_numpy())
        normalised = scores.select("id", pl.Series("u", u, dtype=pl.Float64), "reasons")
        profile = None
        if detector.level == "claim":
            per_claim = normalised.rename({"id": "claim_id"})
        else:
            prefix = f"{detector.level}: "
            profile = normalised.with_columns(
                pl.col("reasons").list.eval(pl.lit(prefix) + pl.element()))
            id_col = LEVEL_ID[detector.level]
            per_claim = (claim_frame.select("claim_id", id_col)
                         .join(profile.rename({"id": id_col}), on=id_col, how="left")
                         .select("claim_id", "u", "reasons"))
        weight = float(weights.get(det_name, 1.0))
        training_long.append(per_claim.with_columns(pl.lit(order, pl.Int32).alias("det"),
                                                    pl.lit(weight, pl.Float64).alias("w")))
        state = detector.to_state()
        claim_detector = detector if detector.level == "claim" else None
        parts.append(DetectorPart(det_name, detector.family, detector.level, weight, reference,
                                  state, claim_detector, profile))
    if not parts:
        raise ValueError(f"no exportable detector among {list(detectors)}: {skipped}")

    settings = PipelineSettings(
        name=name, feature_params=feature_params_to_json(feature_params),
        reference_window=train_window, reason_quantile=reason_quantile, max_reasons=max_reasons,
        data_digest=dataset.digest, meta=dict(meta or {}))
    tables = {t: dataset.scan(t) for t in ("patients", "doctors", "facilities", "pharmacies",
                                           "drugs", "duty_roster", "claims", "claim_lines")}
    context = context_tables(tables, train_window)
    # Bands from the training claims, combined exactly as the pipeline combines.
    placeholder = ScoringPipeline(settings, context, parts, Calibration("platt"),
                                  Bands(np.inf, np.inf), catalogue_yaml)
    training = placeholder._combine(claim_frame.select("claim_id"), training_long)
    bands = Bands.fit(training["raw_score"].to_numpy(), high_share, medium_share)
    placeholder.bands = bands

    holdout_ids = holdout.select(pl.col("claim_id").cast(pl.String)).unique(maintain_order=True)
    claims = dataset.scan("claims").join(holdout_ids.lazy(), on="claim_id", how="semi").collect()
    if claims.height == 0:
        raise ValueError("holdout: none of the held-out claim ids is in the dataset")
    lines = dataset.scan("claim_lines").join(holdout_ids.lazy(), on="claim_id", how="semi").collect()
    raw = placeholder.raw_scores(claims, lines)
    target = labels.target("claim", raw["claim_id"], source="full").to_numpy()
    calibration = Calibration.fit(raw["raw_score"].to_numpy(), target, calibration_method)
    calibration.fitted_on = {**(calibration.fitted_on or {}),
                             "window": [str(claims["service_date"].min()),
                                        str(claims["service_date"].max())]}
    pipeline = ScoringPipeline(settings, context, parts, calibration, bands, catalogue_yaml)
    metrics = holdout_metrics(raw["raw_score"].to_numpy(), target, calibration, bands)
    return pipeline, BuildReport(metrics, training.height, skipped)


def holdout_metrics(raw: np.ndarray, target: np.ndarray, calibration: Calibration,
                    bands: Bands) -> dict[str, Any]:
    """AUPRC, AUROC, Brier score and per-band precision/recall of the risk on held-out claims."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    risk = calibration.transform(raw)
    out: dict[str, Any] = {"claims": int(target.size), "positives": int(target.sum()),
                           "auprc": float(average_precision_score(target, risk)),
                           "auroc": float(roc_auc_score(target, raw)),
                           "brier": float(brier_score_loss(target, risk))}
    for band, threshold in (("high", bands.high_threshold), ("medium_or_high", bands.medium_threshold)):
        flagged = raw >= threshold
        hits = int((flagged & (target == 1)).sum())
        out[f"{band}.share"] = float(flagged.mean())
        out[f"{band}.precision"] = float(hits / flagged.sum()) if flagged.any() else float("nan")
        out[f"{band}.recall"] = float(hits / target.sum()) if target.any() else float("nan")
    return out
