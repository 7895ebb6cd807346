"""The ``ensemble`` family: combine detectors, across levels, by rank or by stacking.

Each member's scores are first brought to the ensemble's level:

* same level: used as they are;
* claim member, entity ensemble: **roll up** over the entity's claims (claim frame
  context columns ``patient_id``, ``doctor_id``, ``pharmacy_id``, ``facility_id``) as two
  columns, the max and the mean claim score;
* entity member, claim ensemble: **push down**: a claim gets its doctor's (patient's,
  pharmacy's, …) score;
* entity member, other-entity ensemble: pushed down to claims, then rolled up.

Every column is turned into a percentile rank against its distribution on the training
rows (an ECDF on ``grid_size`` quantiles kept in the fitted state, so a score never
depends on the other rows of the batch).  Missing values (an entity without claims, a
claim without pharmacy) rank 0.  Then:

* ``method="rank"``: a member's rank is the mean of its columns' ranks; the score is the
  weighted mean of member ranks (``weights``, default equal), in [0, 1].
* ``method="stacked"``: a logistic regression on all rank columns, fitted on a stratified,
  seeded validation fold of the training rows with labels; the score is its log-odds.
  Supervised members that fit on rows (LightGBM, at any level) enter it with out-of-fold
  scores (each row scored by a copy fitted on the other folds of its level), so the
  regression weighs scores like a test row's, not scores of rows whose labels the member
  learnt.

Reasons are the union of the members' reasons (for rolled-up members, the reasons of the
entity's highest-scoring claim), members ordered by weight (stacked: the sum of their
positive coefficients; members of weight 0 are left out), duplicates dropped, at most
``n_reasons``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from medfraud.detectors.base import Detector, make_detector, register, score_frame
from medfraud.detectors.state import decode_array, detector_from_state, encode_array
from medfraud.features.frameset import FeatureSet
from medfraud.labels import Labels
from medfraud.schema import LEVEL_ID

METHODS = ("rank", "stacked")
# Folds of the out-of-fold member scores the stacking regression learns from.
STACKING_FOLDS = 3


@register("ensemble")
class EnsembleDetector(Detector):
    """Rank-average or stacked combination of member detectors at one level.

    Parameters
    ----------
    level : the level scored.
    members : fitted :class:`Detector` objects (used as given) and/or config blocks
        ``{"family": name, **params}`` (built and fitted by :meth:`fit`); at any level.
    method : "rank" or "stacked".
    weights : one weight per member for ``method="rank"``; default equal.
    typology : stacked only: the target typology (None = any fraud).
    seed : seeds the stacking validation split.
    valid_fraction : stacked only: share of training rows the logistic regression sees.
    grid_size : quantiles kept per column for percentile ranks.
    n_reasons : reasons kept per row.
    C : inverse L2 strength of the stacking logistic regression.

    Attributes
    ----------
    members_ : list of fitted detectors.
    columns_ : list of (member index, column name) of the rank columns.
    grids_ : list of sorted quantile arrays, one per column.
    member_weights_ : shape (n_members,), float64.
    coef_, intercept_ : stacked only, logistic-regression coefficients over ``columns_``.
    """

    def __init__(self, level: str = "claim", members: list | tuple = (), method: str = "rank",
                 weights: list[float] | None = None, typology: str | None = None, seed: int = 0,
                 valid_fraction: float = 0.3, grid_size: int = 1000, n_reasons: int = 5, C: float = 1.0):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not members:
            raise ValueError("an ensemble needs at least one member detector")
        if weights is not None and len(weights) != len(members):
            raise ValueError(f"weights has {len(weights)} values for {len(members)} members")
        super().__init__(level, members=list(members), method=method, weights=weights, typology=typology,
                         seed=seed, valid_fraction=valid_fraction, grid_size=grid_size,
                         n_reasons=n_reasons, C=C)

    # --- fit -----------------------------------------------------------------------------
    def fit(self, features: FeatureSet, labels: Labels | None = None) -> EnsembleDetector:
        """Fit configured members, the rank grids and (stacked) the logistic regression."""
        if self.params["method"] == "stacked" and labels is None:
            raise ValueError(f"{self.name}: method='stacked' needs labels")
        members = []
        for i, member in enumerate(self.params["members"]):
            if isinstance(member, Detector):
                members.append(member)
            elif isinstance(member, dict) and "family" in member:
                config = dict(member)
                members.append(make_detector(config.pop("family"), **config).fit(features, labels))
            else:
                raise TypeError(f"ensemble member {i} must be a Detector or a dict with 'family', "
                                f"got {type(member).__name__}")
        self.members_ = members
        # Scored once: the stacker's table reuses the scores of the members it does not
        # refit out of fold.
        scores = [member.score(features) for member in members]
        table, columns = self._member_table(features, scores)
        self.columns_ = columns
        self.grids_ = [_quantile_grid(table[_col_name(m, c)].to_numpy(), self.params["grid_size"])
                       for m, c in columns]
        n_members = len(members)
        if self.params["method"] == "rank":
            weights = np.asarray(self.params["weights"] or [1.0] * n_members, dtype=np.float64)
            if (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"{self.name}: weights must be >= 0 with a positive sum, got {weights}")
            self.member_weights_ = weights
        else:
            ids = features.ids(self.level)
            y = labels.target(self.level, ids, self.params["typology"], source="full").to_numpy()
            if y.sum() < 2 or y.sum() > len(y) - 2:
                raise ValueError(f"{self.name}: stacking needs at least 2 positive and 2 negative rows, "
                                 f"got {int(y.sum())} positives of {len(y)}")
            _, valid_rows = train_test_split(np.arange(len(y)), test_size=self.params["valid_fraction"],
                                             stratify=y, random_state=self.params["seed"])
            valid_rows = np.sort(valid_rows)
            model = LogisticRegression(C=self.params["C"], class_weight="balanced", max_iter=1000)
            model.fit(self._stacking_ranks(features, labels, scores)[valid_rows], y[valid_rows])
            self.coef_ = model.coef_.ravel().astype(np.float64)
            self.intercept_ = float(model.intercept_[0])
            member_of = np.array([m for m, _ in columns])
            self.member_weights_ = np.array([np.clip(self.coef_[member_of == i], 0, None).sum()
                                             for i in range(n_members)])
        return self

    # --- helpers -------------------------------------------------------------------------
    def _stacking_ranks(self, features: FeatureSet, labels: Labels,
                        scores: list[pl.DataFrame]) -> np.ndarray:
        """Rank columns of every row as the logistic regression must see them, shape
        (n, n_columns); ``scores`` are the fitted members' own score frames.

        A supervised member fitted on every training row has learnt their labels: its
        scores there are in-sample, better than on any test row, and the stacker would
        overweight it.  Members that learn labels (``Detector.learns_labels``: LightGBM,
        graph_tree, the semi-supervised gnn architectures) enter with out-of-fold scores
        instead: each row of the member's level is scored by a copy that learnt the labels
        of the other :data:`STACKING_FOLDS` folds only (seeded, stratified by the member's
        target when it has enough positives), like a test row by the member itself.  They
        are ranked against the member's own training grid, as test scores are.
        Unsupervised members learn no label and are used as fitted.
        """
        stacking = [self._out_of_fold_scores(m, features, labels)
                    if m.learns_labels and m.level in features.frames else own
                    for m, own in zip(self.members_, scores, strict=True)]
        table, columns = self._member_table(features, stacking)
        if columns != self.columns_:
            raise ValueError(f"{self.name}: out-of-fold member columns differ: {columns} vs {self.columns_}")
        return self._ranks(table)

    def _out_of_fold_scores(self, member: Detector, features: FeatureSet, labels: Labels) -> pl.DataFrame:
        """``member``'s score frame at its level, each row scored by a copy of the member
        fitted on the other folds of that level's rows.

        The copy is given the features with the level's frame cut to those folds: a tabular
        family then fits on their rows, a graph family learns their nodes' labels only (its
        graph keeps every node, the others unlabelled) and scores every node, of which the
        held-out fold's rows are kept."""
        frame = features.frame(member.level)
        y = labels.target(member.level, features.ids(member.level), member.params.get("typology"),
                          source="full").to_numpy()
        rows = np.arange(frame.height)
        seed = self.params["seed"]
        if min(y.sum(), len(y) - y.sum()) >= STACKING_FOLDS:
            folds = StratifiedKFold(STACKING_FOLDS, shuffle=True, random_state=seed).split(rows, y)
        else:
            folds = KFold(STACKING_FOLDS, shuffle=True, random_state=seed).split(rows)

        def keeping(kept: np.ndarray) -> FeatureSet:
            return dataclasses.replace(features, frames={**features.frames,
                                                         member.level: frame[np.sort(kept)]})

        ids = frame.get_column(LEVEL_ID[member.level]).cast(pl.String)
        parts = []
        for fit_rows, held_rows in folds:
            copy = make_detector(member.family, **member.get_params()).fit(keeping(fit_rows), labels)
            held = copy.score(keeping(held_rows))
            parts.append(held.filter(pl.col("id").is_in(ids.gather(np.sort(held_rows)).implode())))
        return pl.concat(parts)

    def _member_table(self, features: FeatureSet, scores: list[pl.DataFrame] | None = None
                      ) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
        """One row per id at ``level``: every member's columns (``m<i>:<col>``) and reasons,
        from ``scores`` (one score frame per member, at its level; default: each member
        scores ``features``)."""
        if scores is None:
            scores = [member.score(features) for member in self.members_]
        table = features.ids(self.level).cast(pl.String).alias("id").to_frame()
        columns: list[tuple[int, str]] = []
        for i, (member, member_scores) in enumerate(zip(self.members_, scores, strict=True)):
            part = _to_level(member_scores, member.level, self.level, features)
            value_cols = [c for c in part.columns if c not in ("id", "reasons")]
            part = part.rename({c: _col_name(i, c) for c in value_cols} | {"reasons": f"m{i}:reasons"})
            table = table.join(part, on="id", how="left", maintain_order="left")
            columns += [(i, c) for c in value_cols]
        return table, columns

    def _ranks(self, table: pl.DataFrame) -> np.ndarray:
        """Percentile rank of every column against its training grid, shape (n, n_columns)."""
        out = np.zeros((table.height, len(self.columns_)))
        for j, ((m, c), grid) in enumerate(zip(self.columns_, self.grids_)):
            values = table[_col_name(m, c)].cast(pl.Float64).to_numpy()
            out[:, j] = _ecdf_rank(values, grid)
        return out

    # --- score ---------------------------------------------------------------------------
    def score(self, features: FeatureSet) -> pl.DataFrame:
        """Combined score per row at ``level`` with the union of member reasons."""
        self._check_fitted("member_weights_")
        table, columns = self._member_table(features)
        if columns != self.columns_:
            raise ValueError(f"{self.name}: member columns changed since fit: {columns} vs {self.columns_}")
        ranks = self._ranks(table)
        member_of = np.array([m for m, _ in self.columns_])
        n_members = len(self.members_)
        if self.params["method"] == "rank":
            member_rank = np.stack([ranks[:, member_of == i].mean(axis=1) for i in range(n_members)], axis=1)
            scores = member_rank @ self.member_weights_ / self.member_weights_.sum()
        else:
            scores = ranks @ self.coef_ + self.intercept_
        order = np.argsort(-self.member_weights_, kind="stable")
        if (self.member_weights_ > 0).any():  # a member that adds nothing explains nothing
            order = order[self.member_weights_[order] > 0]
        no_reasons = pl.lit([], pl.List(pl.String))
        reasons = (table.select(pl.concat_list([pl.col(f"m{i}:reasons").fill_null(no_reasons) for i in order])
                                .list.unique(maintain_order=True)
                                .list.head(self.params["n_reasons"]).alias("reasons"))["reasons"])
        return score_frame(table["id"], scores, reasons)

    # --- state ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Members' states, rank grids and combination weights (JSON-safe)."""
        self._check_fitted("member_weights_")
        params = {k: v for k, v in self.get_params().items() if k != "members"}
        state = {"family": self.family, "params": params,
                 "members": [m.to_state() for m in self.members_],
                 "columns": [[m, c] for m, c in self.columns_],
                 "grids": [encode_array(g) for g in self.grids_],
                 "member_weights": encode_array(self.member_weights_)}
        if self.params["method"] == "stacked":
            state["coef"] = encode_array(self.coef_)
            state["intercept"] = self.intercept_
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EnsembleDetector:
        members = [detector_from_state(s) for s in state["members"]]
        det = cls(members=members, **state["params"])
        det.members_ = members
        det.columns_ = [(int(m), str(c)) for m, c in state["columns"]]
        det.grids_ = [decode_array(g) for g in state["grids"]]
        det.member_weights_ = decode_array(state["member_weights"])
        if "coef" in state:
            det.coef_ = decode_array(state["coef"])
            det.intercept_ = float(state["intercept"])
        return det


def _col_name(member: int, column: str) -> str:
    return f"m{member}:{column}"


def _quantile_grid(values: np.ndarray, size: int) -> np.ndarray:
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values.astype(np.float64)
    if values.size == 0:
        return np.zeros(1)
    return np.quantile(values, np.linspace(0.0, 1.0, size), method="inverted_cdf")


def _ecdf_rank(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Mid-rank of ``values`` in the sorted ``grid`` (ties share their mean rank), in [0, 1]; NaN -> 0."""
    below = np.searchsorted(grid, values, side="left")
    at_or_below = np.searchsorted(grid, values, side="right")
    rank = (below + at_or_below) / (2.0 * grid.size)
    return np.where(np.isnan(values), 0.0, rank)


def _claim_links(features: FeatureSet, level: str) -> pl.DataFrame:
    claims = features.frame("claim")
    id_col = LEVEL_ID[level]
    if id_col not in claims.columns:
        raise KeyError(f"claim frame has no context column {id_col!r} to link claims to {level}")
    return claims.select(pl.col("claim_id").cast(pl.String), pl.col(id_col).cast(pl.String))


def _to_level(scores: pl.DataFrame, source: str, target: str, features: FeatureSet) -> pl.DataFrame:
    """Bring a member's (id, score, reasons) from level ``source`` to level ``target``.

    Returns a frame with ``id``, one or two score columns (``score`` or ``max``/``mean``)
    and ``reasons``, one row per target id that has a value.
    """
    if source == target:
        return scores.select("id", "score", "reasons")
    if source == "claim":
        per_claim = scores.rename({"id": "claim_id"})
    else:  # push the entity score down to its claims
        per_claim = (_claim_links(features, source)
                     .join(scores.rename({"id": LEVEL_ID[source]}), on=LEVEL_ID[source], how="inner")
                     .select("claim_id", "score", "reasons"))
    if target == "claim":
        return per_claim.rename({"claim_id": "id"})
    target_id = LEVEL_ID[target]
    linked = (_claim_links(features, target).join(per_claim, on="claim_id", how="inner")
              .filter(pl.col(target_id).is_not_null()))
    return (linked.group_by(target_id)
            .agg(pl.col("score").max().alias("max"), pl.col("score").mean().alias("mean"),
                 pl.col("reasons").sort_by(["score", "claim_id"], descending=[True, False]).first())
            .rename({target_id: "id"}))
