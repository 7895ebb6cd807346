import re
from datetime import date

import numpy as np
import polars as pl
import pytest
from graph_testkit import write_hand_dataset

from medfraud.dataset import Dataset
from medfraud.features.frameset import FeatureSet
from medfraud.graph import ClaimsGraph, build_claims_graph


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Dataset:
    return Dataset(write_hand_dataset(tmp_path_factory.mktemp("hand") / "ds"))


def _edges(graph: ClaimsGraph, edge_type) -> dict[tuple[str, str], list[float]]:
    """(src id, dst id) -> [count, amount, first_day, last_day]."""
    s, _, d = edge_type
    src, dst = graph.data[edge_type].edge_index.numpy()
    attrs = graph.data[edge_type].edge_attr.numpy().tolist()
    src_ids = graph.node_ids[s].to_numpy()[src]
    dst_ids = graph.node_ids[d].to_numpy()[dst]
    return {(a, b): v for a, b, v in zip(src_ids, dst_ids, attrs)}


def day(d: date) -> float:
    return float((d - date(1970, 1, 1)).days)


def test_nodes_and_edge_counts(hand):
    g = build_claims_graph(hand)
    assert {t: g.num_nodes(t) for t in g.node_types} == {"patient": 3, "doctor": 2, "pharmacy": 2,
                                                          "facility": 2}
    counts = {r: g.data[s, r, d].edge_index.shape[1] for s, r, d in g.edge_types}
    assert counts == {"treats": 4, "rev_treats": 4, "prescribes_to": 2, "rev_prescribes_to": 2,
                      "fills_at": 2, "rev_fills_at": 2, "works_at": 3, "rev_works_at": 3,
                      "visits": 3, "rev_visits": 3}
    assert g.node_ids["doctor"].to_list() == ["D1", "D2"]


def test_edge_attributes_match_hand_computed(hand):
    g = build_claims_graph(hand)
    treats = _edges(g, ("doctor", "treats", "patient"))
    assert treats[("D1", "P1")] == [2.0, 150.0, day(date(2024, 1, 1)), day(date(2024, 1, 5))]
    assert treats[("D2", "P2")] == [1.0, 20.0, day(date(2024, 3, 1)), day(date(2024, 3, 1))]
    rx = _edges(g, ("doctor", "prescribes_to", "pharmacy"))
    assert rx == {("D1", "R1"): [2.0, 130.0, day(date(2024, 1, 1)), day(date(2024, 1, 10))],
                  ("D2", "R2"): [1.0, 70.0, day(date(2024, 2, 1)), day(date(2024, 2, 1))]}
    fills = _edges(g, ("patient", "fills_at", "pharmacy"))
    assert set(fills) == {("P1", "R1"), ("P3", "R2")}  # X2 was never filled
    works = _edges(g, ("doctor", "works_at", "facility"))
    assert works[("D1", "F2")][0] == 1.0 and works[("D2", "F2")][:2] == [2.0, 90.0]
    rev = _edges(g, ("patient", "rev_treats", "doctor"))
    assert rev[("P1", "D1")] == treats[("D1", "P1")]


def test_window_filters_claims_and_prescriptions(hand):
    g = build_claims_graph(hand, window=(date(2024, 1, 1), date(2024, 2, 29)))
    treats = _edges(g, ("doctor", "treats", "patient"))
    assert ("D2", "P2") not in treats and len(treats) == 3
    visits = _edges(g, ("patient", "visits", "facility"))
    assert visits[("P2", "F2")][:2] == [1.0, 30.0]
    g2 = build_claims_graph(hand, window=(date(2024, 1, 6), date(2024, 1, 31)))
    works = _edges(g2, ("doctor", "works_at", "facility"))
    # the home affiliation of D2 survives without claims, with count 0 and unknown days
    assert works[("D2", "F2")] == [0.0, 0.0, -1.0, -1.0]
    assert _edges(g2, ("doctor", "prescribes_to", "pharmacy")) == {
        ("D1", "R1"): [1.0, 30.0, day(date(2024, 1, 10)), day(date(2024, 1, 10))]}


def test_node_features_from_featureset_are_standardised(hand):
    frame = pl.DataFrame({"doctor_id": ["D2", "D1"], "a": [3.0, 1.0], "b": [None, 5.0]})
    fs = FeatureSet(frames={"doctor": frame}, columns={"doctor": ["a", "b"]})
    g = build_claims_graph(hand, fs)
    x = g.data["doctor"].x.numpy()
    assert g.feature_names["doctor"] == ["a", "b"]
    np.testing.assert_allclose(x[:, 0], [-1.0, 1.0])  # D1 then D2, z-scored
    assert x[1, 1] == 0.0 and np.isfinite(x).all()  # NaN -> 0
    # other types get degree defaults
    assert g.feature_names["patient"][0].startswith("log_count_")
    assert g.data["patient"].x.shape == (3, len(g.feature_names["patient"]))


def test_missing_feature_column_is_named(hand):
    fs = FeatureSet(frames={"doctor": pl.DataFrame({"doctor_id": ["D1"]})},
                    columns={"doctor": ["nope"]})
    with pytest.raises(KeyError, match="nope"):
        build_claims_graph(hand, fs)


def test_helpers(hand):
    g = build_claims_graph(hand)
    np.testing.assert_array_equal(g.index_of("patient", ["P3", "P9", "P1"]), [2, -1, 0])
    adj = g.adjacency(("doctor", "treats", "patient"), "count")
    assert adj.shape == (2, 3) and adj.sum() == 5.0
    x, edge_index, offsets = g.homogeneous()
    assert x.shape[0] == 9 and offsets["patient"] == 0
    # undirected and deduplicated: each of the 14 distinct relation edges appears twice
    assert edge_index.shape[1] == 2 * 14
    with pytest.raises(KeyError, match="claim"):
        g.index_of("claim", ["C1"])


def test_tiny_preset_graph(tiny_dataset):
    g = build_claims_graph(tiny_dataset)
    n_doctors = tiny_dataset.scan("doctors").select(pl.len()).collect().item()
    assert g.num_nodes("doctor") == n_doctors
    claims = tiny_dataset.scan("claims")
    n_pairs = claims.select("doctor_id", "patient_id").unique().select(pl.len()).collect().item()
    treats = g.data["doctor", "treats", "patient"]
    assert treats.edge_index.shape[1] == n_pairs
    assert treats.edge_attr[:, 0].sum().item() == claims.select(pl.len()).collect().item()
    for t in g.node_types:
        assert g.data[t].x.shape[0] == g.num_nodes(t)
        assert bool(g.data[t].x.isfinite().all())


class _Renamed:
    """A dataset whose ``table.column`` has one id replaced, to plant unknown ids."""

    def __init__(self, dataset: Dataset, table: str, column: str, old: str, new: str):
        self.dataset, self.table, self.column, self.old, self.new = dataset, table, column, old, new
        self.path = dataset.path

    def scan(self, table: str) -> pl.LazyFrame:
        frame = self.dataset.scan(table)
        if table != self.table:
            return frame
        return frame.with_columns(pl.col(self.column).replace(self.old, self.new))


@pytest.mark.parametrize(("table", "column", "old", "message"), [
    ("claims", "patient_id", "P2", "claims.patient_id: 2 id(s) not in table patients; "
                                   "example: 'NEW'"),
    ("prescriptions", "pharmacy_id", "R2", "prescriptions.pharmacy_id: 1 id(s) not in table "
                                           "pharmacies; example: 'NEW'"),
    ("doctors", "facility_id", "F1", "claims or doctors.facility_id: 1 id(s) not in table "
                                     "facilities; example: 'NEW'"),
])
def test_ids_missing_from_entity_tables_are_named(hand, table, column, old, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_claims_graph(_Renamed(hand, table, column, old, "NEW"))
