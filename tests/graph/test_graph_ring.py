import numpy as np
import scipy.sparse as sp

from medfraud.graph import find_rings, load_generic_graph, make_fraudar_benchmark, peel, ring_recovery
from medfraud.graph.ring import peel_blocks

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
