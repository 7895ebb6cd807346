"""The scoring pipeline: incoming claims in context -> risk, band and reasons.

:class:`ScoringPipeline` is a plain class (no MLflow) holding everything needed to score
a claim that was never seen in training:

* a **context snapshot** of contract tables: the reference tables (patients, doctors,
  facilities, pharmacies, drugs, duty_roster) and the history claims and lines of the
  training window, so claim features that look back (refills, readmissions, same-day
  card use, duplicate lines) and peer-group statistics see what they saw in training;
* the **claim-level detectors** rebuilt from their saved state (LightGBM text, JSON,
  torch state_dict) and the rule catalogue the ``rules`` detector needs;
* the **entity profiles**: scores of entity-level detectors (doctor, patient, pharmacy,
  facility) computed once on the snapshot and joined to each claim by its entity id;
* per-detector reference CDFs, the calibration and the bands
  (:mod:`medfraud.export.calibration`).

Scoring a batch: the incoming claims and lines are appended to the snapshot in memory
(:class:`medfraud.dataset.InMemoryDataset`), claim features are built for the batch's
date window with the training window as the peer reference, the claim-level audit rules
are evaluated, every detector scores, and the normalised scores are combined,
calibrated, banded and explained.  Claims in one call see each other as context (as the
claims of one settlement day do), unless they are put in separate lanes (the REST service
does, for concurrent requests; see :meth:`ScoringPipeline.lane_tables`).

Files written by :meth:`ScoringPipeline.save` (all JSON, YAML, text or Parquet; nothing is
pickled) are described in docs/export.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from medfraud.dataset import InMemoryDataset, conform
from medfraud.export.calibration import Bands, Calibration, ReferenceCDF
from medfraud.export.inputs import CheckedBatch, SnapshotIds, check_rows, rows_from_frames
from medfraud.rules.inputs import COPY_SEPARATOR, DRG_PEER_STAYS
from medfraud.schema import LEVEL_ID, TABLES

FORMAT_VERSION = 1
REFERENCE_TABLES = ("patients", "doctors", "facilities", "pharmacies", "drugs", "duty_roster")
HISTORY_TABLES = ("claims", "claim_lines", "prescriptions", "pharmacy_purchases")
SCORE_COLUMNS = {"claim_id": pl.String, "risk": pl.Float64, "band": pl.String,
                 "reasons": pl.List(pl.String)}
# Rule history is pruned for batches below this share of the snapshot's claims (see
# ScoringPipeline.rule_tables).
PRUNE_BELOW_SHARE = 0.25
# Claim-level rule kinds that relate a claim only to itself and to other claims of its
# patient or its doctor, or (drg_upcoding) to the DRG stays of its diagnosis.  When every
# enabled claim rule is one of these, rules run on the history of the batch's patients,
# doctors and DRG diagnoses only: the same hits at a cost that no longer grows with the whole
# snapshot.  A catalogue with any other kind falls back to the full history.
HISTORY_SCOPED_RULE_KINDS = frozenset({
    "sex_restriction", "age_restriction", "indication_restriction", "facility_level_restriction",
    "care_setting_restriction", "course_limit", "duplicate_charge", "frequency_limit",
    "dose_over_label", "quantity_over_days_limit", "overlapping_refill", "readmission",
    "overlapping_stays", "outpatient_during_stay", "service_after_death", "card_frequency",
    "same_day_distant_regions", "drg_upcoding", "doctor_off_duty", "idle_stay",
    "implausible_identity",
})
# Query optimisations of the lane copies' one collect (a few hundred rows): the pushdowns only.
_FEW_ROWS_OPTIMIZATIONS = pl.QueryOptFlags.none(predicate_pushdown=True, projection_pushdown=True)
# Reference tables keyed by an id that lane copies suffix (see ScoringPipeline.lane_tables).
_LANE_KEYED = (("patients", "patient_id"), ("doctors", "doctor_id"), ("duty_roster", "doctor_id"))
# Row number of a snapshot claim: slices of the sorted copies are put back in snapshot order.
_ROW = "_snapshot_row"
# Large strings/bytes of a detector state go to their own file (readable LightGBM text,
# torch state_dict bytes) instead of being inlined in the JSON.
_INLINE_LIMIT = 4096


@dataclass
class DetectorPart:
    """One detector of the pipeline.

    Attributes
    ----------
    name : the detector's name in the experiment (e.g. ``lightgbm``).
    family, level : registry family and the level it scores.
    weight : weight in the combined score.
    reference : CDF of its training scores (normalisation to [0, 1]).
    state : the detector's ``to_state()`` (kept for provenance and reloading).
    detector : the rebuilt detector (claim level only; None at entity levels).
    profile : entity levels only: ``id``, ``u`` (normalised score), ``reasons`` per entity
        of the snapshot.
    """

    name: str
    family: str
    level: str
    weight: float
    reference: ReferenceCDF
    state: Any
    detector: Any = None
    profile: pl.DataFrame | None = None


@dataclass
class PipelineSettings:
    """Scalar settings of a pipeline (saved in ``pipeline.json``).

    Attributes
    ----------
    name : model name.
    feature_params : :class:`medfraud.features.FeatureParams` fields (JSON form).
    reference_window : training window (first, last service date) fitting peer statistics.
    reason_quantile : a detector's reasons are shown only when the claim sits at or above
        this position among the detector's training scores.
    max_reasons : reasons kept per claim.
    data_digest : content digest of the training dataset.
    meta : free provenance (run id, experiment, created_at, medfraud version).
    """

    name: str
    feature_params: dict[str, Any]
    reference_window: tuple[date, date]
    reason_quantile: float = 0.9
    max_reasons: int = 5
    data_digest: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class ScoringPipeline:
    """Score incoming claims against a context snapshot with fitted detectors.

    Parameters
    ----------
    settings : :class:`PipelineSettings`.
    context : table -> DataFrame in contract dtypes: :data:`REFERENCE_TABLES` and the
        history tables :data:`HISTORY_TABLES` (possibly empty).
    detectors : :class:`DetectorPart` list (at least one).
    calibration, bands : see :mod:`medfraud.export.calibration`.
    catalogue_yaml : the rule catalogue as YAML text, or None when no rules detector runs.
    """

    def __init__(self, settings: PipelineSettings, context: Mapping[str, pl.DataFrame],
                 detectors: list[DetectorPart], calibration: Calibration, bands: Bands,
                 catalogue_yaml: str | None = None, card: dict[str, Any] | None = None):
        missing = [t for t in (*REFERENCE_TABLES, *HISTORY_TABLES) if t not in context]
        if missing:
            raise ValueError(f"pipeline context lacks table(s) {missing}")
        if not detectors:
            raise ValueError("a scoring pipeline needs at least one detector")
        self.settings = settings
        self.context = {t: conform(t, f) for t, f in context.items()}
        self.detectors = detectors
        self.calibration = calibration
        self.bands = bands
        self.catalogue_yaml = catalogue_yaml
        self.card = card or {}
        self._catalogue = None
        self._feature_params = None
        # Tables of the pipeline's own input check (unknown ids are rejected).
        # Sorted: the input check finds ids by binary search (see inputs._known).
        self.snapshot_ids = {table: SnapshotIds(self.context[table][key])
                             for table, key in (("patients", "patient_id"), ("doctors", "doctor_id"),
                                                ("facilities", "facility_id"),
                                                ("pharmacies", "pharmacy_id"), ("drugs", "drug_code"))}
        # The snapshot as lazy frames: a call concatenates the batch onto them without copying.
        self._lazy_context = {t: f.lazy() for t, f in self.context.items()}
        # Sorted copies of the snapshot tables: a call finds the rows of its dates, patients,
        # diagnoses and claims by binary search instead of scanning the whole snapshot
        # (the price: about one more copy of the history in memory).
        history = self.context["claims"].with_row_index(_ROW)  # snapshot order, kept in slices
        claim_dates = history.select("claim_id", "service_date")
        self._by_date = {
            "claims": _SortedIndex(history, "service_date"),
            "claim_lines": _SortedIndex(self.context["claim_lines"].join(
                claim_dates, on="claim_id", how="left"), "service_date", drop=True),
            "duty_roster": _SortedIndex(self.context["duty_roster"], "date"),
        }
        self._by_key = {
            "claims": _SortedIndex(history, "patient_id"),
            "drg_stays": _SortedIndex(history.filter(pl.col("drg_weight").is_not_null()),
                                      "diagnosis_code"),
            "claim_lines": _SortedIndex(self.context["claim_lines"], "claim_id"),
            "patients": _SortedIndex(self.context["patients"], "patient_id"),
            "doctors": _SortedIndex(self.context["doctors"], "doctor_id"),
        }
        self._claim_reference = None

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def data_digest(self) -> str:
        return self.settings.data_digest

    @property
    def catalogue(self):
        """The claim-level part of the rule catalogue (entity rules never reach a claim score)."""
        if self._catalogue is None and self.catalogue_yaml is not None:
            import yaml

            from medfraud.rules import RuleCatalogue

            raw = yaml.safe_load(self.catalogue_yaml)
            full = RuleCatalogue.model_validate(raw)
            self._catalogue = RuleCatalogue(version=full.version,
                                            rules=[r for r in full.rules if r.level == "claim"])
        return self._catalogue

    @property
    def feature_params(self):
        """The :class:`~medfraud.features.FeatureParams` the detectors were trained with."""
        if self._feature_params is None:
            self._feature_params = feature_params_from_json(self.settings.feature_params)
        return self._feature_params

    @property
    def claim_reference(self):
        """Claim peer-group statistics of the training window, fitted once on the snapshot
        (:func:`medfraud.features.claim_reference`) and shared by every call."""
        if self._claim_reference is None:
            from medfraud.features import claim_reference

            self._claim_reference = claim_reference(
                InMemoryDataset(self._lazy_context), self.settings.reference_window)
        return self._claim_reference

    # ------------------------------------------------------------------ scoring
    def warm(self) -> None:
        """Build what the first calls would otherwise build: the claim peer reference, the
        rule catalogue and each detector's scoring aids (LightGBM's TreeSHAP tables)."""
        _ = self.claim_reference, self.catalogue, self.feature_params
        for part in self.detectors:
            if part.detector is not None:
                part.detector.prepare_scoring()

    def check(self, rows: pl.DataFrame, first_row: int = 1) -> CheckedBatch:
        """Validate input-format rows (see :mod:`medfraud.export.inputs`) against the snapshot."""
        return check_rows(rows, self.snapshot_ids, first_row=first_row)

    def score(self, claims: pl.DataFrame, lines: pl.DataFrame, *, validate: bool = True,
              lanes: Mapping[str, int] | None = None) -> pl.DataFrame:
        """Score claims with their lines.

        Parameters
        ----------
        claims : (n,) one row per claim, the contract's ``claims`` columns.
        lines : (m,) their ``claim_lines`` rows.
        validate : run the input check first (raise :class:`~medfraud.export.inputs.InputError`
            naming row, column and reason on any problem).  Callers that already ran
            :meth:`check` pass False.
        lanes : claim_id -> lane number (claims not named: lane 0).  The claims of each lane
            are scored as if the other lanes' claims were not in the call, in one call
            (see :meth:`lane_tables`); needs :attr:`isolates_lanes`.  None: one lane, the
            claims of the call see each other.

        Returns
        -------
        DataFrame (n,) with claim_id (String), risk (Float64 in [0, 1]), band (String:
        low | medium | high) and reasons (List[String], most important first), in the
        order of ``claims``.
        """
        if validate:
            batch = self.check(rows_from_frames(claims, lines))
            batch.raise_if_bad()
            missing_lines = claims.join(lines.select("claim_id").unique(), on="claim_id", how="anti")
            if missing_lines.height:
                from medfraud.export.inputs import InputError

                raise InputError(pl.DataFrame({
                    "row": [None], "claim_id": [missing_lines["claim_id"][0]], "column": ["claim_id"],
                    "reason": [f"{missing_lines.height} claim(s) have no lines"]},
                    schema={"row": pl.Int64, "claim_id": pl.String, "column": pl.String,
                            "reason": pl.String}))
            claims, lines = batch.claims, batch.lines
        raw = self.raw_scores(claims, lines, lanes)
        risk = self.calibration.transform(raw["raw_score"].to_numpy())
        return raw.with_columns(pl.Series("risk", risk, dtype=pl.Float64).clip(0.0, 1.0),
                                self.bands.expr("raw_score").alias("band")).select(
            [pl.col(c).cast(t) for c, t in SCORE_COLUMNS.items()])

    def score_rows(self, rows: pl.DataFrame, first_row: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Check and score input-format rows; return (scores of valid claims, problems)."""
        batch = self.check(rows, first_row)
        if batch.claims.height == 0:
            return empty_scores(), batch.problems
        return self.score(batch.claims, batch.lines, validate=False), batch.problems

    def raw_scores(self, claims: pl.DataFrame, lines: pl.DataFrame,
                   lanes: Mapping[str, int] | None = None) -> pl.DataFrame:
        """Uncalibrated combined score and reasons: claim_id, raw_score (Float64), reasons.

        ``claims`` and ``lines`` must be valid (contract dtypes, known ids); ``lanes`` as in
        :meth:`score`.
        """
        from medfraud.features import build_features
        from medfraud.features.frameset import FeatureSet

        claims = conform("claims", claims)
        lines = conform("claim_lines", lines)
        ids = claims.select("claim_id")
        window = (claims["service_date"].min(), claims["service_date"].max())
        reference, params, catalogue = self.claim_reference, self.feature_params, self.catalogue
        lane = self._lane_numbers(claims, lanes)
        if lane is None:
            feature_tables, rule_tables = self.feature_tables, self.rule_tables
        else:
            def feature_tables(c, l):
                return self.lane_tables(self.feature_tables, c, l, lane)

            def rule_tables(c, l):
                return self.lane_tables(lambda c_, l_: self.rule_tables(c_, l_, prune=True),
                                        c, l, lane)
        # The claim rules and the detectors reading their hits run on a second thread while
        # the claim features and the other detectors run on this one: both read the same
        # frozen snapshot, and polars, LightGBM and the TreeSHAP kernel release the GIL, so
        # on two cores they overlap (most of a small batch's queries are single-threaded).
        on_hits = [i for i, p in enumerate(self.detectors)
                   if p.level == "claim" and p.family == "rules" and p.detector is not None]

        def rule_parts() -> dict[int, pl.DataFrame]:
            from medfraud.rules import evaluate_tables

            hits = evaluate_tables(rule_tables(claims, lines), catalogue, window, missing="skip",
                                   claim_copies=lane is not None)
            hits = hits.join(ids.rename({"claim_id": "id"}), on="id", how="semi")
            scored = FeatureSet({"claim": ids}, {"claim": []}, window=window, rule_hits=hits)
            return {i: self._normalised(self.detectors[i], i, scored, ids) for i in on_hits}

        def feature_parts() -> dict[int, pl.DataFrame]:
            dataset = InMemoryDataset(feature_tables(claims, lines),
                                      manifest={"content_digest": self.data_digest})
            features = build_features(dataset, window, levels=("claim",), params=params,
                                      claim_reference=reference)
            claim_frame = features.frame("claim").join(ids, on="claim_id", how="semi")
            if lane is not None:  # the entity profiles are keyed by the original ids
                claim_frame = claim_frame.with_columns(
                    pl.col("patient_id", "doctor_id").str.split(COPY_SEPARATOR).list.first())
            scored = FeatureSet({"claim": claim_frame}, {"claim": features.columns["claim"]},
                                window=window)
            return {i: self._normalised(p, i, scored, claim_frame)
                    for i, p in enumerate(self.detectors) if i not in on_hits}

        if on_hits:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medfraud-rules") as pool:
                pending = pool.submit(rule_parts)
                parts = feature_parts()
                parts.update(pending.result())
        else:
            parts = feature_parts()
        return self._combine(claims.select("claim_id"), [parts[i] for i in range(len(self.detectors))])

    def feature_tables(self, claims: pl.DataFrame, lines: pl.DataFrame) -> dict[str, pl.LazyFrame]:
        """The tables the claim features of a batch read: the batch, plus the snapshot's
        claims of the batch's dates whose patient or doctor is in the batch, their lines,
        patients, doctors and duty roster.

        A claim's features relate it only to claims of its own patient (card use, refills,
        stays, duplicate lines) and of its doctor (facilities per day) inside the window of
        the call, and to peer statistics fixed at training (:attr:`claim_reference`).  The
        rest of the snapshot cannot change them, so it is left out and a call costs what its
        batch costs, whatever the size of the snapshot.
        """
        window = (claims["service_date"].min(), claims["service_date"].max())
        seen, seen_lines = claims, lines
        history = self._by_date["claims"].between(window)
        # Empty when the batch is dated after the snapshot (online scoring): the steps
        # below would only add their fixed costs to a REST call.
        if history.height:
            patient_ids = claims["patient_id"].unique().implode()
            doctor_ids = claims["doctor_id"].unique().implode()
            history = (history.filter(pl.col("patient_id").is_in(patient_ids)
                                      | pl.col("doctor_id").is_in(doctor_ids))
                       .join(claims.select("claim_id"), on="claim_id", how="anti")
                       .sort(_ROW).drop(_ROW))
            history_lines = self._by_date["claim_lines"].between(window).join(
                history.select("claim_id"), on="claim_id", how="semi")
            seen = pl.concat([history, claims], how="vertical_relaxed")
            seen_lines = pl.concat([history_lines, lines], how="vertical_relaxed")
        tables = dict(self._lazy_context)
        tables["claims"] = seen.lazy()
        tables["claim_lines"] = seen_lines.lazy()
        tables["patients"] = self._by_key["patients"].rows_of(seen["patient_id"]).lazy()
        tables["doctors"] = self._by_key["doctors"].rows_of(seen["doctor_id"]).lazy()
        tables["duty_roster"] = self._duty_roster(window, seen["doctor_id"]).lazy()
        return tables

    def rule_tables(self, claims: pl.DataFrame, lines: pl.DataFrame,
                    prune: bool | None = None) -> dict[str, pl.LazyFrame]:
        """The tables the claim rules see for a batch: the snapshot plus the batch.

        With ``prune`` (default: when every enabled claim rule's kind is in
        :data:`HISTORY_SCOPED_RULE_KINDS` and the batch has fewer claims than
        :data:`PRUNE_BELOW_SHARE` of the snapshot's) the history keeps only, up to the
        batch's last date, the claims of its patients and its doctors' claims on its dates
        with their lines and patients, and the batch doctors' duty roster on its dates; the
        DRG stays of its DRG diagnoses come as a separate table
        (:data:`medfraud.rules.inputs.DRG_PEER_STAYS`, claim rows only) that only the DRG
        rule reads.  Rows are found by binary search, see ``_SortedIndex``.
        """
        if prune is None:
            # A batch of a quarter of the snapshot's size or more needs most of its history
            # anyway: gathering it row by row then costs more than it saves (measured: from
            # about 50k claims against a 200k-claim snapshot).
            prune = (PRUNE_BELOW_SHARE * self.context["claims"].height > claims.height
                     and all(r.kind in HISTORY_SCOPED_RULE_KINDS for r in self.catalogue.enabled))
        ids = claims.select("claim_id").lazy()
        tables = dict(self._lazy_context)
        if not prune:
            history = self._lazy_context["claims"].join(ids, on="claim_id", how="anti")
            history_lines = self._lazy_context["claim_lines"].join(ids, on="claim_id", how="anti")
            tables["claims"] = pl.concat([history, claims.lazy()])
            tables["claim_lines"] = pl.concat([history_lines, lines.lazy()])
            return tables
        # Rules relate a claim to its patient's claims, to its doctor's claims of the same
        # day (two facilities) and, for DRG stays, to the stays of its diagnosis; nothing
        # after the window end is read.
        window = (claims["service_date"].min(), claims["service_date"].max())
        diagnoses = claims.filter(pl.col("drg_weight").is_not_null())["diagnosis_code"]
        doctor_ids = claims["doctor_id"].unique().implode()

        # Steps that change nothing are skipped: each costs ~0.1-0.25 ms on a REST batch.
        # Snapshot claims dated after the batch (none when scoring new claims), and the
        # batch's own claims when they are re-scored from the snapshot, are left out.
        last_date = self._by_date["claims"].last_key
        after_batch = last_date is not None and last_date > window[1]
        rescored = self._by_key["claim_lines"].holds_any(claims["claim_id"])

        def before_batch(frame: pl.DataFrame) -> pl.DataFrame:
            if after_batch:
                frame = frame.filter(pl.col("service_date") <= window[1])
            if rescored:
                frame = frame.join(claims.select("claim_id"), on="claim_id", how="anti")
            return frame

        # The emptiness tests skip steps that would only add their fixed costs to a REST
        # call (a batch dated after the snapshot has no snapshot claims of its dates).
        same_days = self._by_date["claims"].between(window)
        if same_days.height:
            same_days = same_days.filter(pl.col("doctor_id").is_in(doctor_ids))
        related = self._by_key["claims"].rows_of(claims["patient_id"])
        if same_days.height:  # the patients' rows are distinct, these may repeat them
            related = pl.concat([related, same_days]).unique(_ROW)
        related = before_batch(related)
        history = related.sort(_ROW)
        seen = pl.concat([history.drop(_ROW), claims], how="vertical_relaxed")
        tables["claims"] = seen.lazy()
        # Stays of the batch's DRG diagnoses feed only the diagnosis's weight statistics
        # (drg_upcoding reads claim columns): they come apart from the claims, without
        # their lines, which no rule relates to a batch claim of another patient.  Only
        # drg_upcoding reads them, as its diagnoses' reference population (each stay once:
        # those already in the history are not repeated).
        peer_stays = self._by_key["drg_stays"].frame.clear()
        if diagnoses.len():
            peer_stays = before_batch(self._by_key["drg_stays"].rows_of(diagnoses))
            in_history = np.isin(peer_stays.get_column(_ROW).to_numpy(),
                                 history.get_column(_ROW).to_numpy())
            if in_history.any():
                peer_stays = peer_stays.filter(pl.Series(~in_history))
        tables[DRG_PEER_STAYS] = peer_stays.drop(_ROW).lazy()
        tables["claim_lines"] = pl.concat([self._by_key["claim_lines"].rows_of(related["claim_id"]),
                                           lines], how="vertical_relaxed").lazy()
        tables["patients"] = self._by_key["patients"].rows_of(
            pl.concat([related["patient_id"], claims["patient_id"]])).lazy()
        tables["duty_roster"] = self._duty_roster(window, claims["doctor_id"]).lazy()
        return tables

    @property
    def isolates_lanes(self) -> bool:
        """Whether :meth:`score` takes ``lanes``: every enabled claim rule reads only its
        claims' patients, doctor-days and DRG diagnoses (:data:`HISTORY_SCOPED_RULE_KINDS`),
        so each lane's history can be cut out and copied."""
        return self.catalogue is None or all(
            r.kind in HISTORY_SCOPED_RULE_KINDS for r in self.catalogue.enabled)

    def _lane_numbers(self, claims: pl.DataFrame, lanes: Mapping[str, int] | None
                      ) -> pl.Series | None:
        """Lane (Int64) per row of ``claims``; None when all are in one lane."""
        if not lanes or set(lanes.values()) == {0}:
            return None
        if not self.isolates_lanes:
            raise ValueError("this pipeline's rule catalogue has kinds that read beyond a "
                             "claim's patient, doctor-day and DRG diagnosis: it cannot score "
                             "lanes apart in one call")
        ids = [claims.get_column(c) for c in ("claim_id", "patient_id", "doctor_id")]
        if any(column.str.contains(COPY_SEPARATOR, literal=True).any() for column in ids):
            raise ValueError(f"an id of the batch contains {COPY_SEPARATOR!r}, the separator "
                             "of lane copies: score its lanes in separate calls")
        lane = claims.get_column("claim_id").replace_strict(lanes, default=0,
                                                            return_dtype=pl.Int64)
        return None if lane.n_unique() < 2 else lane

    def lane_tables(self, build: Callable[[pl.DataFrame, pl.DataFrame], dict[str, pl.LazyFrame]],
                    claims: pl.DataFrame, lines: pl.DataFrame, lane: pl.Series
                    ) -> dict[str, pl.LazyFrame]:
        """The tables ``build`` (:meth:`feature_tables` or :meth:`rule_tables`) gives the
        batch, as one copy per lane that holds the history and that lane's claims only.

        A claim relates only to claims of its patient, of its doctor on its day and (DRG)
        of its diagnosis; history rows that relate to claims of other lanes are as
        irrelevant to it as the rest of the snapshot, which ``build`` leaves out.  In the
        copy of lane k > 0 every patient and doctor id, and the id of every snapshot
        claim, gets the suffix ``COPY_SEPARATOR + k``: copies of a patient's history never
        meet, and each lane's claims see what they would see alone.  The DRG reference
        population counts each claim once (``claim_copies`` of
        :func:`~medfraud.rules.evaluate_tables`); two lanes must not hold DRG stays of one
        diagnosis.  Tables keyed otherwise (drugs, facilities, ...) are shared.

        The copies are built as plan nodes and collected together: an eager step per
        table and lane cost ~75 us each.
        """
        tables = build(claims, lines)
        names = ["claims", "claim_lines", *(n for n, _ in _LANE_KEYED)]
        if DRG_PEER_STAYS in tables:
            names.append(DRG_PEER_STAYS)
        ids = claims.get_column("claim_id")
        copies: dict[str, list[pl.LazyFrame]] = {name: [] for name in names}
        for k in lane.unique().sort().to_list():
            others = ids.filter(lane != k).implode()
            not_others = ~pl.col("claim_id").is_in(others)
            rows = {"claims": tables["claims"].filter(not_others),
                    "claim_lines": tables["claim_lines"].filter(not_others)}
            rows.update({name: tables[name] for name in names if name not in rows})
            if k:
                suffix = f"{COPY_SEPARATOR}{k}"
                copied = pl.when(pl.col("claim_id").is_in(ids.filter(lane == k).implode())) \
                    .then(pl.col("claim_id")).otherwise(pl.col("claim_id") + suffix)
                people = (pl.col("patient_id") + suffix, pl.col("doctor_id") + suffix)
                for name, key in _LANE_KEYED:
                    if rows[name] is self._lazy_context[name]:  # whole: the rows named only
                        rows[name] = rows[name].join(rows["claims"].select(key).unique(),
                                                     on=key, how="semi")
                    rows[name] = rows[name].with_columns(pl.col(key) + suffix)
                rows["claims"] = rows["claims"].with_columns(copied, *people)
                rows["claim_lines"] = rows["claim_lines"].with_columns(copied)
                if DRG_PEER_STAYS in rows:
                    rows[DRG_PEER_STAYS] = rows[DRG_PEER_STAYS].with_columns(
                        pl.col("claim_id") + suffix, *people)
            for name in names:
                copies[name].append(rows[name])
        # Materialised in one collect: the rules and features read each table several
        # times, and would otherwise repeat the copies' filters and suffixes each time.
        # A snapshot table lane 0 reads whole stays as it is, not copied.
        whole = {name: frames.pop(0) for name, frames in copies.items()
                 if frames[0] is self._lazy_context.get(name)}
        names = [name for name, frames in copies.items() if frames]
        merged = pl.collect_all([pl.concat(copies[name], how="vertical_relaxed")
                                 for name in names], engine="in-memory",
                                optimizations=_FEW_ROWS_OPTIMIZATIONS)
        out = {**tables, **{name: frame.lazy() for name, frame in zip(names, merged)}}
        for name, frame in whole.items():
            out[name] = pl.concat([frame, out[name]], how="vertical_relaxed") if copies[name] \
                else frame
        return out

    def _duty_roster(self, window: tuple[date, date], doctor_ids: pl.Series) -> pl.DataFrame:
        """The snapshot's duty roster of ``doctor_ids`` on the dates of ``window``."""
        roster = self._by_date["duty_roster"].between(window)
        # Empty for a batch dated after the snapshot: skip the filter's fixed cost.
        if roster.height:
            roster = roster.filter(pl.col("doctor_id").is_in(doctor_ids.unique().implode()))
        return roster

    def _normalised(self, part: DetectorPart, order: int, features, claim_frame: pl.DataFrame) -> pl.DataFrame:
        """claim_id, u (Float64 in [0, 1] or null), reasons, det (order) for one detector."""
        if part.level == "claim":
            scored = part.detector.score(features)
            u = part.reference.transform(scored["score"].to_numpy())
            out = scored.select(pl.col("id").alias("claim_id"), pl.Series("u", u, dtype=pl.Float64),
                                "reasons")
        else:
            id_col = LEVEL_ID[part.level]
            out = (claim_frame.select("claim_id", id_col)
                   .join(part.profile.rename({"id": id_col}), on=id_col, how="left")
                   .select("claim_id", "u", "reasons"))
        return out.with_columns(pl.lit(order, pl.Int32).alias("det"),
                                pl.lit(part.weight, pl.Float64).alias("w"))

    def _combine(self, ids: pl.DataFrame, parts: list[pl.DataFrame]) -> pl.DataFrame:
        # One lazy plan, one collect: on a REST batch the fixed cost per eager step dominates.
        long = pl.concat([part.lazy() for part in parts], how="vertical")
        present = pl.col("u").is_not_null() & pl.col("u").is_not_nan()
        combined = long.group_by("claim_id").agg(
            ((pl.col("u") * pl.col("w")).filter(present).sum()
             / pl.col("w").filter(present).sum()).alias("raw_score"))
        q, k = self.settings.reason_quantile, self.settings.max_reasons
        reasons = (long.filter(present & (pl.col("u") >= q))
                   .select("claim_id", "u", "det", pl.col("reasons").alias("reason"))
                   .explode("reason").drop_nulls("reason")
                   .with_columns(pl.int_range(pl.len()).over("claim_id", "det").alias("pos"))
                   .sort(["claim_id", "u", "det", "pos"], descending=[False, True, False, False])
                   .unique(["claim_id", "reason"], keep="first", maintain_order=True)
                   .group_by("claim_id", maintain_order=True)
                   .agg(pl.col("reason").head(k).alias("reasons")))
        return (ids.lazy().join(combined, on="claim_id", how="left", maintain_order="left")
                .join(reasons, on="claim_id", how="left", maintain_order="left")
                .with_columns(pl.col("raw_score").fill_null(0.0).fill_nan(0.0),
                              pl.col("reasons").fill_null(pl.lit([], dtype=pl.List(pl.String))))
                .collect(engine="in-memory"))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the pipeline to folder ``path`` (created; must not hold another pipeline)."""
        path = Path(path)
        if (path / "pipeline.json").exists():
            raise FileExistsError(f"{path} already holds a pipeline")
        (path / "context").mkdir(parents=True, exist_ok=True)
        (path / "detectors").mkdir(exist_ok=True)
        (path / "profiles").mkdir(exist_ok=True)
        for table, frame in self.context.items():
            frame.write_parquet(path / "context" / f"{table}.parquet", compression="zstd")
        entries = []
        for part in self.detectors:
            entry = {"name": part.name, "family": part.family, "level": part.level,
                     "weight": part.weight,
                     "state": _write_state(path / "detectors", part.name, part.state),
                     "reference": f"detectors/{part.name}.reference.json"}
            (path / entry["reference"]).write_text(json.dumps(part.reference.to_json()))
            if part.profile is not None:
                entry["profile"] = f"profiles/{part.name}.parquet"
                part.profile.write_parquet(path / entry["profile"], compression="zstd")
            entries.append(entry)
        if self.catalogue_yaml is not None:
            (path / "rules.yaml").write_text(self.catalogue_yaml, encoding="utf-8")
        (path / "calibration.json").write_text(json.dumps(self.calibration.to_json(), indent=2))
        (path / "bands.json").write_text(json.dumps(self.bands.to_json(), indent=2))
        if self.card:
            (path / "model_card.json").write_text(json.dumps(self.card, indent=2, default=str,
                                                             ensure_ascii=False), encoding="utf-8")
        s = self.settings
        spec = {"format_version": FORMAT_VERSION, "name": s.name, "feature_params": s.feature_params,
                "reference_window": [s.reference_window[0].isoformat(), s.reference_window[1].isoformat()],
                "reason_quantile": s.reason_quantile, "max_reasons": s.max_reasons,
                "data_digest": s.data_digest, "meta": s.meta, "detectors": entries,
                "rules": "rules.yaml" if self.catalogue_yaml is not None else None,
                "context": {t: f"context/{t}.parquet" for t in self.context}}
        (path / "pipeline.json").write_text(json.dumps(spec, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoringPipeline:
        """Read a pipeline written by :meth:`save`; claim-level detectors are rebuilt from state."""
        from medfraud.detectors.state import detector_from_state

        path = Path(path)
        spec_file = path / "pipeline.json"
        if not spec_file.is_file():
            raise FileNotFoundError(f"{path} is not a scoring pipeline: pipeline.json is missing")
        spec = json.loads(spec_file.read_text())
        if spec.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{spec_file}: format_version {spec.get('format_version')} is not "
                             f"{FORMAT_VERSION}")
        context = {t: pl.read_parquet(path / rel) for t, rel in spec["context"].items()}
        parts = []
        for entry in spec["detectors"]:
            state = _read_state(path, entry["state"])
            reference = ReferenceCDF.from_json(json.loads((path / entry["reference"]).read_text()))
            detector = detector_from_state(state) if entry["level"] == "claim" else None
            profile = pl.read_parquet(path / entry["profile"]) if entry.get("profile") else None
            parts.append(DetectorPart(entry["name"], entry["family"], entry["level"],
                                      float(entry["weight"]), reference, state, detector, profile))
        catalogue_yaml = (path / spec["rules"]).read_text(encoding="utf-8") if spec.get("rules") else None
        card_file = path / "model_card.json"
        card = json.loads(card_file.read_text(encoding="utf-8")) if card_file.is_file() else {}
        first, last = (date.fromisoformat(d) for d in spec["reference_window"])
        settings = PipelineSettings(spec["name"], spec["feature_params"], (first, last),
                                    spec["reason_quantile"], spec["max_reasons"], spec["data_digest"],
                                    spec.get("meta", {}))
        calibration = Calibration.from_json(json.loads((path / "calibration.json").read_text()))
        bands = Bands.from_json(json.loads((path / "bands.json").read_text()))
        return cls(settings, context, parts, calibration, bands, catalogue_yaml, card)

    def __repr__(self) -> str:
        dets = ", ".join(f"{p.name}@{p.level}" for p in self.detectors)
        return f"ScoringPipeline(name={self.name!r}, detectors=[{dets}], digest={self.data_digest[:12]})"


# Up to this many values, _SortedIndex.rows_of searches the keys with numpy.
FEW_KEYS = 256


class _SortedIndex:
    """A frame sorted by one column, whose rows for a value range or a set of values are
    found by binary search (O(k log n) for k values) instead of a scan of the frame.

    ``drop`` : the key column was added for the index only and is dropped from results.
    """

    def __init__(self, frame: pl.DataFrame, column: str, drop: bool = False):
        self.frame = frame.sort(column)
        self.column = column
        self.drop = drop
        self._keys = self.frame[column]
        self._key_objects: np.ndarray | None = None  # the keys as Python objects, on first use
        self._keys_without_nulls = self._keys.null_count() == 0  # None and str do not compare

    def _result(self, rows: pl.DataFrame) -> pl.DataFrame:
        return rows.drop(self.column) if self.drop else rows

    @property
    def last_key(self) -> Any:
        """The largest key (None for an empty frame)."""
        return self._keys[-1] if self._keys.len() else None

    def between(self, window: tuple[Any, Any]) -> pl.DataFrame:
        """Rows whose key lies in ``window`` (inclusive)."""
        lo = int(self._keys.search_sorted(window[0], side="left"))
        hi = int(self._keys.search_sorted(window[1], side="right"))
        return self._result(self.frame.slice(lo, max(0, hi - lo)))

    def _ranges(self, values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(first, last): the row range [first, last) of each distinct non-null value."""
        if (values.len() <= FEW_KEYS and values.dtype == self._keys.dtype == pl.String
                and self._keys_without_nulls):
            # A REST call's few ids: numpy's binary search over the keys as Python strings
            # skips polars' fixed cost per step (~0.2 ms of the ~0.3 ms of a look-up).
            if self._key_objects is None:
                self._key_objects = self._keys.to_numpy()
            wanted = np.array(sorted(set(values.to_list()) - {None}), dtype=object)
            first = np.searchsorted(self._key_objects, wanted, side="left").astype(np.int64)
            last = np.searchsorted(self._key_objects, wanted, side="right").astype(np.int64)
        else:
            values = values.drop_nulls().unique().cast(self._keys.dtype)
            first = self._keys.search_sorted(values, side="left").to_numpy().astype(np.int64)
            last = self._keys.search_sorted(values, side="right").to_numpy().astype(np.int64)
        return first, last

    def holds_any(self, values: pl.Series) -> bool:
        """Whether any of ``values`` is a key."""
        first, last = self._ranges(values)
        return bool((last > first).any())

    def rows_of(self, values: pl.Series) -> pl.DataFrame:
        """Rows whose key is one of ``values`` (nulls and repeats ignored), in key order."""
        first, last = self._ranges(values)
        length = last - first
        # Row numbers of all ranges at once: each range's start repeated, plus 0..length-1.
        offsets = np.repeat(first - np.cumsum(length) + length, length)
        rows = offsets + np.arange(int(length.sum()), dtype=np.int64)
        return self._result(self.frame[np.sort(rows)])


def empty_scores() -> pl.DataFrame:
    """A score frame with no rows."""
    return pl.DataFrame(schema=SCORE_COLUMNS)


def feature_params_to_json(params) -> dict[str, Any]:
    """:class:`~medfraud.features.FeatureParams` -> JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(asdict(params)))


def feature_params_from_json(blob: Mapping[str, Any]):
    """Inverse of :func:`feature_params_to_json` (lists become the tuples the dataclass uses)."""
    from medfraud.features import FeatureParams

    return FeatureParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob.items()})


def _write_state(folder: Path, name: str, state: Any) -> dict[str, Any]:
    """Write a detector state; return its JSON reference (large text/bytes in own files)."""
    if isinstance(state, bytes):
        (folder / f"{name}.bin").write_bytes(state)
        return {"bytes": f"detectors/{name}.bin"}
    if isinstance(state, str):
        (folder / f"{name}.txt").write_text(state, encoding="utf-8")
        return {"text": f"detectors/{name}.txt"}
    if not isinstance(state, dict):
        raise TypeError(f"detector {name}: to_state() returned {type(state).__name__}; expected a "
                        "dict, str or bytes")
    doc = {}
    for key, value in state.items():
        if isinstance(value, bytes):
            rel = f"detectors/{name}.{key}.bin"
            (folder.parent / rel).write_bytes(value)
            doc[key] = {"$file": rel, "$type": "bytes"}
        elif isinstance(value, str) and len(value) > _INLINE_LIMIT:
            rel = f"detectors/{name}.{key}.txt"
            (folder.parent / rel).write_text(value, encoding="utf-8")
            doc[key] = {"$file": rel, "$type": "text"}
        else:
            doc[key] = value
    (folder / f"{name}.json").write_text(json.dumps(doc, default=_json_default))
    return {"json": f"detectors/{name}.json"}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (date,)):
        return value.isoformat()
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"detector state holds a {type(value).__name__}, which is not JSON-serialisable")


def _read_state(root: Path, ref: Mapping[str, str]) -> Any:
    if "bytes" in ref:
        return (root / ref["bytes"]).read_bytes()
    if "text" in ref:
        return (root / ref["text"]).read_text(encoding="utf-8")
    doc = json.loads((root / ref["json"]).read_text())
    for key, value in list(doc.items()):
        if isinstance(value, dict) and "$file" in value:
            file = root / value["$file"]
            doc[key] = file.read_bytes() if value.get("$type") == "bytes" else file.read_text("utf-8")
    return doc


def context_tables(tables: Mapping[str, pl.LazyFrame], window: tuple[date, date]) -> dict[str, pl.DataFrame]:
    """The scoring context cut from a dataset's tables.

    Reference tables whole; claims and their lines with service_date in ``window``;
    prescriptions and pharmacy purchases empty (claim features and claim-level rules do not
    read them; the entity levels that do are scored once at export, see ``profile``).
    """
    out = {t: tables[t].collect() for t in REFERENCE_TABLES}
    claims = tables["claims"].filter(
        pl.col("service_date").is_between(pl.lit(window[0]), pl.lit(window[1]), closed="both"))
    out["claims"] = claims.collect()
    out["claim_lines"] = tables["claim_lines"].join(out["claims"].lazy().select("claim_id"),
                                                    on="claim_id", how="semi").collect()
    for table in ("prescriptions", "pharmacy_purchases"):
        out[table] = pl.DataFrame(schema=TABLES[table].columns)
    return out
