from datetime import date

import numpy as np
import pytest
import scipy.sparse as sp
from ring_testkit import honest_core_with_ring

from medfraud.graph import (build_claims_graph, find_rings, load_generic_graph,
                            make_fraudar_benchmark, peel, ring_recovery)
from medfraud.graph.ring import (claims_evidence, excess_evidence, expand_block, find_claims_rings,
                                 peel_blocks, shuffled_null)

REVIEWS = ("user", "reviews", "item")


def test_peel_finds_a_planted_biclique():
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 200)) < 0.01).astype(float)
    dense[:10, :8] = 1.0
    result = peel(sp.csr_matrix(dense), weighting="none")
    assert set(result.rows) == set(range(10)) and set(result.cols) == set(range(8))
    assert np.isclose(result.density, 80 / 18)


def test_peel_of_empty_graph():
    result = peel(sp.csr_matrix((5, 4)))
    assert result.rows.size == 0 and result.density == 0.0


def test_peel_blocks_removes_and_repeats():
    m = np.zeros((40, 40))
    m[:8, :8] = 1.0
    m[20:26, 20:27] = 1.0
    blocks = peel_blocks(sp.csr_matrix(m), n_blocks=3, weighting="none")
    found = [(set(b.rows), set(b.cols)) for b in blocks]
    assert (set(range(8)), set(range(8))) in found
    assert (set(range(20, 26)), set(range(20, 27))) in found


def test_ring_discovery_recovers_camouflaged_blocks(tmp_path):
    path = make_fraudar_benchmark(3000, 2000, block=(30, 30), n_blocks=3, camouflage_ratio=1.0,
                                  seed=1, out=tmp_path / "b", block_density=0.4)
    g = load_generic_graph(path)
    candidates, scores = find_rings(g, REVIEWS, n_blocks=5)
    report = ring_recovery(candidates, g.meta["rings"])
    assert min(report["per_ring"].values()) >= 0.8
    assert report["recall"] == 1.0 and report["precision"] == 1.0
    # entity scores: every ring member scores, honest nodes mostly do not
    labels = g.labels["user"].to_numpy()
    assert (scores["user"][labels == 1] > 0).mean() > 0.9
    assert (scores["user"][labels == 0] > 0).mean() < 0.01
    assert candidates[0].n_edges > 0 and candidates[0].relation == REVIEWS


def test_weighted_beats_or_matches_plain_under_heavy_camouflage(tmp_path):
    # biased camouflage (towards popular items) is the attack the column weighting resists
    path = make_fraudar_benchmark(3000, 1500, block=(30, 30), n_blocks=1, camouflage_ratio=4.0,
                                  seed=3, out=tmp_path / "h", block_density=0.3,
                                  camouflage="biased")
    g = load_generic_graph(path)
    result = {}
    for weighting in ("log", "none"):
        candidates, _ = find_rings(g, REVIEWS, n_blocks=1, weighting=weighting)
        result[weighting] = ring_recovery(candidates, g.meta["rings"])["per_ring"]["ring0"]
    assert result["log"] > result["none"]
    assert result["log"] >= 0.75


def test_ring_recovery_metrics():
    truth = {"r1": {"a", "b", "c", "d"}, "r2": {"x", "y"}}
    report = ring_recovery([{"a", "b", "c"}, {"q", "z"}], truth)
    assert report["per_ring"] == {"r1": 0.75, "r2": 0.0}
    assert report["precision"] == 0.5 and report["recall"] == 0.5
    restricted = ring_recovery([{"a", "b"}], truth, universe={"a", "b"})
    assert restricted["per_ring"] == {"r1": 1.0} and restricted["n_rings"] == 1


def test_bucketed_fast_phase_agrees_with_exact_peeling():
    rng = np.random.default_rng(5)
    m = (rng.random((2000, 1500)) < 0.002).astype(float)
    m[100:125, 40:60] = (rng.random((25, 20)) < 0.8)
    exact = peel(sp.csr_matrix(m), exact_below=10**9)
    fast = peel(sp.csr_matrix(m), exact_below=0, epsilon=0.05)
    assert set(exact.rows) == set(range(100, 125)) and set(exact.cols) == set(range(40, 60))
    jaccard = (len(set(fast.rows) & set(exact.rows)) + len(set(fast.cols) & set(exact.cols))) / (
        len(set(fast.rows) | set(exact.rows)) + len(set(fast.cols) | set(exact.cols)))
    assert jaccard >= 0.9 and fast.density >= 0.95 * exact.density


def test_excess_evidence_is_log_excess_over_the_quantile():
    m = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [4.0, 8.0, 16.0]]))
    out = excess_evidence(m, quantile=0.5)          # reference = 4, the median stored value
    assert np.allclose(out.toarray(), [[0, 0, 0], [0, np.log(2), np.log(4)]])
    assert out.nnz == 2                              # edges at or below the reference drop out
    with pytest.raises(ValueError, match="quantile must be in"):
        excess_evidence(m, quantile=1.0)


def test_shuffled_null_keeps_row_weights_and_is_seeded():
    m = sp.random(200, 150, density=0.05, random_state=1, format="csr") * 10
    a, b, c = shuffled_null(m, seed=3), shuffled_null(m, seed=3), shuffled_null(m, seed=4)
    assert np.allclose(np.asarray(a.sum(axis=1)).ravel(), np.asarray(m.sum(axis=1)).ravel())
    assert np.isclose(a.sum(), m.sum()) and (a != b).nnz == 0 and (a != c).nnz > 0


def test_expand_block_adds_members_tied_to_most_of_the_block():
    m = np.zeros((6, 5))
    m[:4, :3] = 1.0          # rows 0-3 x cols 0-2: the ring
    m[4, 0] = 1.0            # row 4 touches one column of three: stays out
    m[5, 3:] = 1.0           # unrelated
    rows, cols = expand_block(sp.csr_matrix(m), np.array([0, 1]), np.array([0, 1, 2]))
    assert rows.tolist() == [0, 1, 2, 3] and cols.tolist() == [0, 1, 2]


def test_claims_search_recovers_a_ring_hidden_under_an_honest_dense_core():
    graph, ring = honest_core_with_ring(seed=0)
    # plain peeling finds the honest facility blocks, not the ring
    plain, _ = find_rings(graph, ("doctor", "treats", "patient"), weight="count", n_blocks=5)
    assert ring_recovery(plain, {"r": ring})["recall"] == 0.0
    candidates, scores = find_claims_rings(graph)
    report = ring_recovery(candidates, {"r": ring})
    assert report["per_ring"]["r"] == 1.0 and report["precision"] == 1.0
    best = candidates[0]
    sizes = {k: len(v) for k, v in best.members.items()}
    assert sizes == {"patient": 8, "doctor": 4, "pharmacy": 1}
    assert best.relation is None and best.meta["null_density"] < best.density
    assert best.amount > 8 * 4 * 3 * 1000 and best.n_edges >= 8 * 5
    ids = graph.node_ids["doctor"].to_list()
    flagged = {ids[i] for i in np.flatnonzero(scores["doctor"] > 0)}
    assert flagged == {m for m in ring if m.startswith("D")}
    # a null bar set above the ring's density leaves nothing
    above = best.density / best.meta["null_density"] + 0.1
    assert find_claims_rings(graph, significance=above)[0] == []


def test_one_off_big_sales_through_one_pharmacy_are_not_a_ring():
    graph, ring = honest_core_with_ring(seed=0, one_off=True)
    found = find_claims_rings(graph)[0]
    assert [c.member_set() for c in found] == [ring]
    # the block is there: without the "patients see several of its doctors" test
    # (min_doctors=1 lowers it to one doctor) it becomes a second candidate
    loose = find_claims_rings(graph, min_doctors=1)[0]
    assert len(loose) == 2 and {"D020", "D025", "R009"} <= loose[1].member_set()


def test_claims_search_is_deterministic_and_checks_its_inputs():
    graph, _ = honest_core_with_ring(seed=1)
    a, b = find_claims_rings(graph, seed=5)[0], find_claims_rings(graph, seed=5)[0]
    assert [c.members for c in a] == [c.members for c in b]
    with pytest.raises(ValueError, match="evidence must be one of"):
        claims_evidence(graph, evidence="counts")
    graph.data = graph.data.edge_type_subgraph([("doctor", "treats", "patient")])
    with pytest.raises(ValueError, match="needs relations"):
        find_claims_rings(graph)


def test_claims_search_on_the_tiny_preset_finds_its_rings(tiny_dataset):
    import polars as pl

    graph = build_claims_graph(tiny_dataset)
    labels = tiny_dataset.read("labels_entities").filter(pl.col("typology") == "collusion_ring")
    rings = {r: set(m) for r, m in labels.group_by("ring_id").agg("entity_id").iter_rows()}
    assert len(rings) >= 2
    for evidence in ("amount", "high_value"):
        candidates, _ = find_claims_rings(graph, evidence=evidence)
        report = ring_recovery(candidates, rings)
        assert report["recall"] >= 0.6 and report["precision"] >= 0.6, (evidence, report)
        assert all(c.members["doctor"] and c.members["patient"] for c in candidates)
    # a window without claims has no evidence and no candidates
    empty = build_claims_graph(tiny_dataset, window=(date(2030, 1, 1), date(2030, 1, 31)))
    assert find_claims_rings(empty) == ([], {t: pytest.approx(np.zeros(empty.num_nodes(t)))
                                             for t in ("patient", "doctor", "pharmacy")})
