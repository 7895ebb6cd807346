"""Leak-free train/test splits: by time, by entity group, or both.

A provider whose claims land on both sides of a split leaks (DOMAIN.md), and so does a
fraud ring whose members are divided between train and test.  Grouped splits therefore
assign *connected units* of entities, never single rows:

* doctors are grouped by their facility (a label-free proxy for who works together),
  pharmacies by their chain; facilities stand alone;
* optionally, a ``groups`` frame (entity_id, group_id) — e.g. evaluation passes the
  ``ring_id`` of ``labels_entities`` — merges every entity of a group into one unit, so
  ring members can never be split.  Features never see this frame; only evaluation does.

Units are connected components (scipy.sparse.csgraph) of the graph entity — proxy group —
label group.  They are shuffled with ``numpy.random.default_rng(seed)`` and moved to the
test side until the test side holds ``test_fraction`` of the claims.  Entities of the other
levels follow their ring group when they have one, else the side of their dominant
counterparty at the grouping level (the one they share most claims with).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medfraud.dataset import Dataset
from medfraud.schema import ID_PREFIX, LEVEL_ID

ENTITY_TABLE = {"patient": "patients", "doctor": "doctors", "pharmacy": "pharmacies",
                "facility": "facilities"}
GROUP_LEVELS = ("doctor", "facility", "pharmacy")
SIDES = ("train", "test")


@dataclass(frozen=True)
class Split:
    """One train/test split.

    Attributes
    ----------
    name : "temporal", "entity_grouped[<level>]" or "temporal_grouped[<level>]".
    train_window, test_window : (first, last) service date of each side, inclusive; None
        when the split is not temporal (every date on both sides).
    group_level : the level whose units were assigned (None for a temporal split).
    train_ids, test_ids : level -> frozenset of entity ids on each side (grouped splits;
        empty for a temporal split).  Every entity of the dataset is on exactly one side.
    """

    name: str
    train_window: tuple[date, date] | None
    test_window: tuple[date, date] | None
    group_level: str | None = None
    train_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    test_ids: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def grouped(self) -> bool:
        return self.group_level is not None

    def window(self, side: str) -> tuple[date, date] | None:
        """The service-date window of ``side`` ("train" or "test")."""
        _check_side(side)
        return self.train_window if side == "train" else self.test_window

    def assign(self, level: str, ids: pl.Series) -> pl.Series:
        """Side of each entity id: "train", "test", or null when the id is unknown.

        Parameters
        ----------
        level : patient, doctor, pharmacy or facility.
        ids : String Series of shape (n,).

        Returns
        -------
        String Series of shape (n,) named "side".
        """
        if not self.grouped:
            raise ValueError(f"{self.name} split is not grouped: entities are not assigned; "
                             "select rows by window instead (mask)")
        if level not in self.train_ids:
            raise KeyError(f"no assignment at level {level!r}; levels: {sorted(self.train_ids)}")
        test, train = self.test_ids[level], self.train_ids[level]
        lookup = pl.DataFrame({"_id": [*test, *train],
                               "side": ["test"] * len(test) + ["train"] * len(train)},
                              schema={"_id": pl.String, "side": pl.String})
        return (pl.DataFrame({"_id": ids.cast(pl.String)})
                .join(lookup, on="_id", how="left", maintain_order="left")["side"])

    def mask(self, level: str, frame: pl.DataFrame, side: str = "train") -> pl.Series:
        """Boolean Series selecting the rows of a feature frame that belong to ``side``.

        Parameters
        ----------
        level : claim, patient, doctor, pharmacy or facility.
        frame : a FeatureSet frame of that level.  Claim frames need ``service_date`` (for
            temporal splits) and, for grouped ones, the grouping level's id column and
            ``patient_id`` (claims without a grouping entity follow their patient).
        side : "train" or "test".

        Returns
        -------
        Boolean Series of shape (frame.height,).  For a purely temporal split, entity rows are
        all selected: build one FeatureSet per window instead.
        """
        _check_side(side)
        selected = pl.Series("mask", np.ones(frame.height, dtype=bool))
        if level == "claim":
            window = self.window(side)
            if window is not None:
                _require(frame, ["service_date"], level)
                selected = selected & frame["service_date"].is_between(window[0], window[1])
            if self.grouped:
                group_col = LEVEL_ID[self.group_level]
                _require(frame, [group_col, "patient_id"], level)
                by_group = self.assign(self.group_level, frame[group_col])
                by_patient = self.assign("patient", frame["patient_id"])
                claim_side = pl.select(pl.coalesce(by_group, by_patient)).to_series()
                selected = selected & (claim_side == side).fill_null(False)
            return selected.alias("mask")
        if self.grouped:
            id_col = LEVEL_ID[level]
            _require(frame, [id_col], level)
            selected = (self.assign(level, frame[id_col]) == side).fill_null(False)
        return selected.alias("mask")


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")


def _require(frame: pl.DataFrame, columns: list[str], level: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{level} frame lacks column(s) {missing} needed by the split")


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _add_months(first: date, months: int) -> tuple[int, int]:
    index = first.year * 12 + first.month - 1 + months
    return index // 12, index % 12 + 1


def _temporal_windows(dataset: Dataset, train_months: int | None, test_months: int | None,
                      train_fraction: float) -> tuple[tuple[date, date], tuple[date, date]]:
    span = dataset.scan("claims").select(pl.col("service_date").min().alias("first"),
                                         pl.col("service_date").max().alias("last")).collect()
    first, last = span["first"][0], span["last"][0]
    if first is None:
        raise ValueError(f"{dataset.path}: claims table is empty; cannot split by time")
    n_months = (last.year - first.year) * 12 + last.month - first.month + 1
    if n_months < 2:
        raise ValueError(f"{dataset.path}: claims span {n_months} calendar month "
                         f"({first} to {last}); a temporal split needs at least 2")
    if train_months is None:
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        train_months = min(max(1, round(n_months * train_fraction)), n_months - 1)
    if test_months is None:
        test_months = n_months - train_months
    if train_months < 1 or test_months < 1 or train_months + test_months > n_months:
        raise ValueError(f"train_months={train_months} + test_months={test_months} must be >= 1 "
                         f"each and fit in the {n_months} months of data ({first} to {last})")
    train_end = _month_end(*_add_months(first, train_months - 1))
    test_start = date(*_add_months(first, train_months), 1)
    test_end = min(_month_end(*_add_months(first, train_months + test_months - 1)), last)
    return (first, train_end), (test_start, test_end)


def temporal_split(dataset: Dataset, train_months: int | None = None,
                   test_months: int | None = None, train_fraction: float = 0.67) -> Split:
    """Train on the first calendar months of the data, test on the months after.

    Parameters
    ----------
    dataset : the dataset (only claims.service_date is read).
    train_months : calendar months in the training window; default
        ``round(n_months * train_fraction)`` (at least 1, leaving at least 1 for test).
    test_months : calendar months in the test window, right after training; default the rest.
    train_fraction : used when ``train_months`` is None.

    Returns
    -------
    Split with both windows set and no entity assignment.
    """
    train_window, test_window = _temporal_windows(dataset, train_months, test_months,
                                                  train_fraction)
    return Split("temporal", train_window, test_window)


def _entity_frames(dataset: Dataset) -> dict[str, pl.DataFrame]:
    return {level: dataset.scan(table).select(LEVEL_ID[level]).collect()
            for level, table in ENTITY_TABLE.items()}


def _proxy_edges(dataset: Dataset, group_level: str) -> pl.DataFrame:
    """Label-free edges (entity, proxy node) that keep likely collaborators together."""
    if group_level == "doctor":
        return dataset.scan("doctors").select(
            pl.col("doctor_id").alias("node"), (pl.lit("facility:") + pl.col("facility_id"))
            .alias("other")).collect()
    if group_level == "pharmacy":
        return dataset.scan("pharmacies").filter(pl.col("chain_id").is_not_null()).select(
            pl.col("pharmacy_id").alias("node"), (pl.lit("chain:") + pl.col("chain_id"))
            .alias("other")).collect()
    return pl.DataFrame(schema={"node": pl.String, "other": pl.String})


def _check_groups(groups: pl.DataFrame, entities: dict[str, pl.DataFrame]) -> pl.DataFrame:
    missing = [c for c in ("entity_id", "group_id") if c not in groups.columns]
    if missing:
        raise KeyError(f"groups lacks column(s) {missing}; expected (entity_id, group_id)")
    groups = groups.select("entity_id", "group_id").drop_nulls()
    known = pl.concat([f.rename({f.columns[0]: "entity_id"}) for f in entities.values()])
    unknown = groups.join(known, on="entity_id", how="anti")
    if unknown.height:
        raise ValueError(f"groups: {unknown.height} entity_id(s) are not patients, doctors, "
                         f"pharmacies or facilities of the dataset; e.g. "
                         f"{unknown['entity_id'][0]!r}")
    return groups


def _level_of(ids: pl.Expr) -> pl.Expr:
    expr = pl.lit(None, dtype=pl.String)
    for level in ENTITY_TABLE:
        expr = pl.when(ids.str.starts_with(ID_PREFIX[level])).then(pl.lit(level)).otherwise(expr)
    return expr


def _assign_entities(dataset: Dataset, group_level: str, test_fraction: float, seed: int,
                     groups: pl.DataFrame | None,
                     ) -> tuple[dict[str, frozenset], dict[str, frozenset]]:
    if group_level not in GROUP_LEVELS:
        raise ValueError(f"group_level must be one of {GROUP_LEVELS}, got {group_level!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    entities = _entity_frames(dataset)
    group_col = LEVEL_ID[group_level]

    edges = [_proxy_edges(dataset, group_level)]
    members = pl.DataFrame(schema={"entity_id": pl.String, "group_id": pl.String})
    if groups is not None:
        members = _check_groups(groups, entities)
        edges.append(members.select(pl.col("entity_id").alias("node"),
                                    (pl.lit("group:") + pl.col("group_id")).alias("other")))
    edges_df = pl.concat(edges)
    nodes = pl.concat([
        entities[group_level][group_col], members["entity_id"], edges_df["other"],
    ]).unique(maintain_order=True).sort()
    index = pl.DataFrame({"node": nodes, "_i": np.arange(nodes.len())})
    idx_edges = (edges_df.join(index, on="node").join(
        index.rename({"node": "other", "_i": "_j"}), on="other"))
    n = nodes.len()
    graph = coo_matrix((np.ones(idx_edges.height), (idx_edges["_i"].to_numpy(),
                                                    idx_edges["_j"].to_numpy())), shape=(n, n))
    _, component = connected_components(graph, directed=False)

    # Weigh units by claims of their grouping-level entities so test_fraction is in claims.
    weight = dataset.scan("claims").filter(pl.col(group_col).is_not_null()).group_by(group_col) \
        .agg(pl.len().alias("_w")).collect()
    unit = pl.DataFrame({"node": nodes, "_unit": component}).join(
        weight.rename({group_col: "node"}), on="node", how="left").with_columns(
        pl.col("_w").fill_null(0))
    unit_weight = unit.group_by("_unit").agg(pl.col("_w").sum()).sort("_unit")
    if unit_weight.height < 2:
        raise ValueError(f"{dataset.path}: all {group_level}s form one connected unit (through "
                         "their proxy groups and `groups`); nothing can be held out")
    order = rng.permutation(unit_weight.height)
    weights = unit_weight["_w"].to_numpy()[order].astype(float)
    if weights.sum() == 0:  # no claims at this level: balance the number of units instead
        weights = np.ones_like(weights)
    # The shuffled prefix whose claim share is closest to test_fraction goes to test; at
    # least one unit on each side.
    cumulative = np.cumsum(weights)[:-1] / weights.sum()
    n_test = int(np.argmin(np.abs(cumulative - test_fraction))) + 1
    test_units = unit_weight["_unit"].to_numpy()[order][:n_test]
    node_side = unit.select("node", pl.when(pl.col("_unit").is_in(test_units.tolist()))
                            .then(pl.lit("test")).otherwise(pl.lit("train")).alias("side"))

    claims = dataset.scan("claims").select("patient_id", "doctor_id", "facility_id",
                                           "pharmacy_id").collect()
    group_side = node_side.rename({"node": group_col})
    sides: dict[str, pl.DataFrame] = {}
    for level, frame in entities.items():
        id_col = LEVEL_ID[level]
        if level == group_level:
            sides[level] = frame.join(group_side, on=id_col, how="left")
            continue
        ring_side = members.filter(_level_of(pl.col("entity_id")) == level).join(
            node_side.rename({"node": "entity_id"}), on="entity_id", how="inner").group_by(
            "entity_id").agg(pl.col("side").first()).rename({"entity_id": id_col,
                                                              "side": "_ring"})
        dominant = (
            claims.filter(pl.col(id_col).is_not_null() & pl.col(group_col).is_not_null())
            .group_by(id_col, group_col).agg(pl.len().alias("_n"))
            .sort([id_col, "_n", group_col], descending=[False, True, False])
            .group_by(id_col, maintain_order=True).first()
            .join(group_side, on=group_col, how="left")
            .select(id_col, pl.col("side").alias("_dominant"))
        )
        # Entities without any claim at the grouping level: a seeded coin with test_fraction.
        coin = pl.Series(np.where(rng.random(frame.height) < test_fraction, "test", "train"))
        sides[level] = (
            frame.with_columns(coin.alias("_coin"))
            .join(ring_side, on=id_col, how="left").join(dominant, on=id_col, how="left")
            .select(id_col, pl.coalesce("_ring", "_dominant", "_coin").alias("side"))
        )
    train = {lvl: frozenset(f.filter(pl.col("side") == "train")[LEVEL_ID[lvl]].to_list())
             for lvl, f in sides.items()}
    test = {lvl: frozenset(f.filter(pl.col("side") == "test")[LEVEL_ID[lvl]].to_list())
            for lvl, f in sides.items()}
    return train, test


def entity_grouped_split(dataset: Dataset, group_level: str = "doctor",
                         test_fraction: float = 0.3, seed: int = 0,
                         groups: pl.DataFrame | None = None) -> Split:
    """Put every entity (and its claims) on one side, keeping connected units together.

    Parameters
    ----------
    dataset : the dataset (entity tables and claims are read; never the label tables).
    group_level : "doctor", "facility" or "pharmacy": the level whose units are assigned.
    test_fraction : target share of claims on the test side, in (0, 1).
    seed : seed of the numpy Generator shuffling the units.
    groups : optional (entity_id, group_id) frame; entities sharing a group_id are kept on
        one side (evaluation passes ring_id from the labels here).

    Returns
    -------
    Split with ``train_ids`` / ``test_ids`` for patient, doctor, pharmacy and facility and
    no windows.
    """
    train, test = _assign_entities(dataset, group_level, test_fraction, seed, groups)
    return Split(f"entity_grouped[{group_level}]", None, None, group_level, train, test)


def temporal_grouped_split(dataset: Dataset, group_level: str = "doctor",
                           test_fraction: float = 0.3, seed: int = 0,
                           groups: pl.DataFrame | None = None, train_months: int | None = None,
                           test_months: int | None = None,
                           train_fraction: float = 0.67) -> Split:
    """Both: train = early window × train entities, test = later window × test entities.

    Parameters are those of :func:`temporal_split` and :func:`entity_grouped_split`.
    """
    train_window, test_window = _temporal_windows(dataset, train_months, test_months,
                                                  train_fraction)
    train, test = _assign_entities(dataset, group_level, test_fraction, seed, groups)
    return Split(f"temporal_grouped[{group_level}]", train_window, test_window, group_level,
                 train, test)
