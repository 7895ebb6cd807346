"""Dense-subgraph (ring) discovery by greedy peeling, in the spirit of FRAUDAR.

FRAUDAR (Hooi et al., KDD 2016) scores a node set S of a bipartite graph by
g(S) = f(S) / |S|, where f(S) sums the weights of the edges inside S, and finds a
near-optimal S by greedily removing the node whose removal costs the least.  Weighting
each column's edges by 1 / log(deg + c) makes the score resist camouflage: edges a fraud
block adds towards popular honest columns are cheap and do not hide the block.
With unit weights the same peeling is Charikar's average-degree algorithm, kept here as
the plain baseline (``weighting="none"``).

Peeling removes one node per step.  The minimum is found with a two-level bucket index
(square-root decomposition of the priority array: per-bucket minima plus an argmin inside
one bucket), and a removal updates all its neighbours at once with numpy, so the only
Python loop is one iteration per removed node.  On large graphs the sparse fringe is first
peeled in vectorised (1 + epsilon) priority buckets until ``exact_below`` nodes remain.

On a claims graph, plain counts make honest structure the densest part of the graph
(patients see the doctors of their facility again and again; chronic patients keep one
doctor), so :func:`find_claims_rings` peels *evidence* instead: one bipartite matrix
patients x (doctors + pharmacies) whose edges weigh log+(amount / upper-decile amount) of
the relation, keeps blocks whose density beats the same search on a degree-preserving
shuffle of that matrix, requires several doctors and several patients per ring, and grows
each block by the patients and columns it links to (see docs/graph.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from medfraud.graph.core import EDGE_ATTRS, ClaimsGraph, EdgeType

WEIGHTINGS = ("log", "none")
TREATS: EdgeType = ("doctor", "treats", "patient")
FILLS: EdgeType = ("patient", "fills_at", "pharmacy")
EVIDENCE = ("amount", "high_value")
MAX_SPLIT_NODES = 5_000  # larger peeled blocks are split by plain connectivity only


@dataclass
class PeelResult:
    """One dense block of a bipartite matrix: row and column indices and its density g(S)."""

    rows: np.ndarray
    cols: np.ndarray
    density: float


@dataclass
class RingCandidate:
    """A suspected ring.

    Attributes
    ----------
    members : node type -> sorted ids in the block.
    density : g(S) of the block under the weighting used (weighted edges per node).
    n_edges : edges inside the block.
    amount : sum of the edges' ``amount`` attribute inside the block (yuan; 0 if unknown).
    relation : the edge type the block was found on.
    """

    members: dict[str, list[str]]
    density: float
    n_edges: int
    amount: float
    relation: EdgeType | None = None
    meta: dict = field(default_factory=dict)

    def member_set(self) -> set[str]:
        return {m for ids in self.members.values() for m in ids}


def column_weights(matrix: sp.csr_matrix, weighting: str = "log", c: float = 5.0) -> np.ndarray:
    """Per-column edge weight, shape (n_cols,): 1/log(deg + c) or 1 (``weighting="none"``)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "none":
        return np.ones(matrix.shape[1])
    degree = np.asarray((matrix != 0).sum(axis=0)).ravel()
    return 1.0 / np.log(degree + c)


def _neighbours(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (neighbour, weight) entries of the CSR rows ``nodes``, gathered without a loop."""
    starts, ends = indptr[nodes], indptr[nodes + 1]
    lengths = ends - starts
    if lengths.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return indices[offsets], data[offsets]


def peel(matrix: sp.spmatrix, weighting: str = "log", c: float = 5.0,
         col_weight: np.ndarray | None = None, epsilon: float = 0.05,
         exact_below: int = 20_000) -> PeelResult:
    """Greedy peeling of one bipartite matrix; returns the densest prefix found.

    While more than ``exact_below`` nodes remain, all nodes whose priority is within a factor
    (1 + ``epsilon``) of the minimum are removed together (one vectorised bucket per step;
    these are the sparse fringe nodes, far from any dense block).  The last ``exact_below``
    nodes are peeled exactly, one minimum per step, as in FRAUDAR.  ``exact_below`` >= the
    node count gives the exact algorithm throughout.

    Parameters
    ----------
    matrix : (n_rows, n_cols), non-negative edge weights (1 for a plain graph).
    weighting : "log" (FRAUDAR column weighting) or "none" (Charikar).
    c : the constant of 1/log(deg + c).
    col_weight : precomputed column weights, shape (n_cols,) (overrides ``weighting``).
    epsilon, exact_below : the bucketed fast phase (see above).

    Returns
    -------
    PeelResult with the row/column indices of the densest block and its g(S).
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    if matrix.nnz and matrix.data.min() < 0:
        raise ValueError("peel: edge weights must be non-negative")
    n_rows, n_cols = matrix.shape
    w = column_weights(matrix, weighting, c) if col_weight is None else col_weight
    weighted = sp.csr_matrix(matrix.multiply(w[None, :]))
    weighted.eliminate_zeros()
    n = n_rows + n_cols
    both = sp.bmat([[None, weighted], [weighted.T, None]], format="csr")
    indptr, indices, data = both.indptr, both.indices, both.data
    priority = np.asarray(both.sum(axis=1)).ravel()
    alive = np.diff(indptr) > 0
    n_alive = int(alive.sum())
    if n_alive == 0:
        return PeelResult(np.zeros(0, np.int64), np.zeros(0, np.int64), 0.0)

    bucket = max(16, int(np.sqrt(n)))
    n_buckets = -(-n // bucket)
    p = np.full(n_buckets * bucket, np.inf)
    p[:n][alive] = priority[alive]
    total = float(weighted.sum())
    best_density, best_step = total / n_alive, 0
    order = np.empty(n_alive, dtype=np.int64)
    removed = 0

    # fast phase: remove a whole (1 + epsilon) bucket of minimum priorities per step
    live = np.flatnonzero(alive)
    in_batch = np.zeros(n, dtype=bool)
    while len(live) > exact_below:
        live_p = p[live]
        lowest = live_p.min()
        # max(): float round-off can leave a tiny negative minimum; the min itself always goes
        take = live_p <= max(lowest * (1.0 + epsilon), lowest)
        batch, live = live[take], live[~take]
        nbrs, weights = _neighbours(indptr, indices, data, batch)
        in_batch[batch] = True
        # edges with both ends in the batch were counted twice in p[batch].sum()
        internal = weights[in_batch[nbrs]].sum() / 2.0
        in_batch[batch] = False
        total -= p[batch].sum() - internal
        p[batch] = np.inf
        p[:n] -= np.bincount(nbrs, weights, minlength=n)
        order[removed: removed + len(batch)] = batch
        removed += len(batch)
        remaining = n_alive - removed
        if remaining and total / remaining > best_density:
            best_density, best_step = total / remaining, removed

    # exact phase: one minimum per step, found through per-bucket minima
    grid = p.reshape(n_buckets, bucket)  # a view: writes to p show up here
    bucket_min = grid.min(axis=1)
    for step in range(removed, n_alive):
        b = int(bucket_min.argmin())
        node = b * bucket + int(grid[b].argmin())
        order[step] = node
        total -= p[node]
        p[node] = np.inf
        nbrs = indices[indptr[node]:indptr[node + 1]]
        # removed neighbours hold inf, and inf - w stays inf, so no mask is needed
        p[nbrs] -= data[indptr[node]:indptr[node + 1]]
        touched = np.unique(np.append(nbrs // bucket, b))
        bucket_min[touched] = grid[touched].min(axis=1)
        remaining = n_alive - step - 1
        if remaining and total / remaining > best_density:
            best_density, best_step = total / remaining, step + 1
    block = order[best_step:]
    return PeelResult(np.sort(block[block < n_rows]), np.sort(block[block >= n_rows] - n_rows),
                      float(best_density))


def peel_blocks(matrix: sp.spmatrix, n_blocks: int = 5, weighting: str = "log", c: float = 5.0,
                min_density: float = 0.0, min_size: int = 2,
                relative_density: float = 0.75,
                col_weight: np.ndarray | None = None) -> list[PeelResult]:
    """Extract up to ``n_blocks`` blocks: peel, remove the block's nodes, peel again.

    Each peeled block is split into connected components (one candidate each).

    Column weights are fixed from the full graph so later blocks are scored on the same
    scale (``col_weight``, shape (n_cols,), overrides them, e.g. to score a null copy of
    the graph on the real graph's weights).  Stops early when a block is smaller than
    ``min_size`` nodes, its density is at most ``min_density`` or below
    ``relative_density`` times the first block's density (the background of an honest
    graph has a dense core too), or no edges remain.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    w = column_weights(matrix, weighting, c) if col_weight is None else col_weight
    row_keep = np.ones(matrix.shape[0])
    col_keep = np.ones(matrix.shape[1])
    blocks: list[PeelResult] = []
    for _ in range(n_blocks):
        current = sp.diags(row_keep) @ matrix @ sp.diags(col_keep)
        current = sp.csr_matrix(current)
        current.eliminate_zeros()
        if current.nnz == 0:
            break
        result = peel(current, col_weight=w)
        if len(result.rows) + len(result.cols) < min_size or result.density <= min_density:
            break
        if blocks and result.density < relative_density * blocks[0].density:
            break
        row_keep[result.rows] = 0.0
        col_keep[result.cols] = 0.0
        floor = max(min_density, relative_density * blocks[0].density if blocks else 0.0)
        parts = [p for p in _components(current, result, w, min_size, n_blocks)
                 if len(p.rows) + len(p.cols) >= min_size and p.density > floor]
        blocks.extend(parts[: n_blocks - len(blocks)])
    return sorted(blocks, key=lambda b: -b.density)


def _components(matrix: sp.csr_matrix, block: PeelResult, col_weight: np.ndarray,
                min_size: int = 2, limit: int = 50) -> list[PeelResult]:
    """Split a peeled block into its connected components, densest first.

    Disjoint rings of equal density tie with their union under g(S), so one peel can
    return several rings at once; a ring is a connected dense block.  Returned densities
    are recomputed per component (weighted edges / nodes).
    """
    inside = sp.csr_matrix(matrix[block.rows][:, block.cols].multiply(col_weight[block.cols][None, :]))
    # Nodes with less than half the block's average weighted degree (e.g. one honest node
    # touching two rings) would glue separate rings together: drop them first.
    row_deg = np.asarray(inside.sum(axis=1)).ravel()
    col_deg = np.asarray(inside.sum(axis=0)).ravel()
    keep_r, keep_c = row_deg >= block.density, col_deg >= block.density
    block = PeelResult(block.rows[keep_r], block.cols[keep_c], block.density)
    inside = sp.csr_matrix(inside[keep_r][:, keep_c])
    # A few stray edges between two rings (butterfly-poor) must not merge them: keep an
    # edge whose butterfly (2x2 biclique) density is at least half the block's median
    # (truss-like support from two sparse products; skipped for blocks too large to be
    # one ring, where the product would cost more than the peeling).
    binary = (inside > 0).astype(np.float64)
    if binary.shape[0] + binary.shape[1] > MAX_SPLIT_NODES:
        return _split(block, binary, inside, min_size, limit)
    support = sp.csr_matrix((binary @ binary.T @ binary).multiply(binary)).tocoo()
    # drop the degenerate paths u-v-u'-v and u-i-u-v: butterflies = paths - deg u - deg v + 1
    deg_r = np.asarray(binary.sum(axis=1)).ravel()
    deg_c = np.asarray(binary.sum(axis=0)).ravel()
    butterflies = support.data - deg_r[support.row] - deg_c[support.col] + 1.0
    # normalise by the most butterflies the edge could close, so hubs don't dominate
    possible = np.maximum((deg_r[support.row] - 1) * (deg_c[support.col] - 1), 1.0)
    support.data = butterflies / possible
    support = sp.csr_matrix((np.maximum(support.data, 0.0), (support.row, support.col)),
                            shape=binary.shape)
    if support.nnz:
        cut = 0.5 * float(np.median(support.data))
        support.data[support.data < cut] = 0.0
        support.eliminate_zeros()
    linked = sp.csr_matrix((support > 0).astype(np.float64))
    return _split(block, linked, inside, min_size, limit)


def _split(block: PeelResult, linked: sp.csr_matrix, inside: sp.csr_matrix,
           min_size: int = 2, limit: int = 50) -> list[PeelResult]:
    """The ``limit`` densest connected components of ``linked`` with at least ``min_size``
    nodes, as blocks; densities from the ``inside`` weights."""
    n_r = len(block.rows)
    both = sp.bmat([[None, linked], [linked.T, None]], format="csr")
    n_comp, label = connected_components(both, directed=False)
    row_label, col_label = label[:n_r], label[n_r:]
    # weighted edges per component, attributed through the row end of each edge
    coo = inside.tocoo()
    mass = np.bincount(row_label[coo.row], weights=coo.data, minlength=n_comp)
    size = np.bincount(label, minlength=n_comp)
    density = mass / np.maximum(size, 1)
    chosen = [k for k in np.argsort(-density, kind="stable") if size[k] >= min_size][:limit]
    return [PeelResult(block.rows[row_label == k], block.cols[col_label == k], float(density[k]))
            for k in chosen]


def find_rings(graph: ClaimsGraph, edge_type: EdgeType, n_blocks: int = 5, weighting: str = "log",
               c: float = 5.0, weight: str | None = None, min_density: float = 0.0,
               min_size: int = 3, relative_density: float = 0.75) -> tuple[list[RingCandidate], dict[str, np.ndarray]]:
    """Ring candidates on one relation of a graph, plus per-entity scores.

    Parameters
    ----------
    graph : the graph; ``edge_type`` (src, relation, dst) gives rows (src) and columns (dst).
    n_blocks, weighting, c, min_density, min_size, relative_density : see :func:`peel_blocks`.
    weight : None for a 0/1 graph, or an edge attribute (e.g. "count") as edge weight.

    Returns
    -------
    candidates : list of :class:`RingCandidate`, densest first.
    scores : node type -> float64 (n_t,), the density of the block a node belongs to (0
        outside every block).
    """
    src_type, _, dst_type = edge_type
    matrix = graph.adjacency(edge_type, weight)
    amounts = graph.adjacency(edge_type, "amount")
    blocks = peel_blocks(matrix, n_blocks, weighting, c, min_density, min_size, relative_density)
    scores = {t: np.zeros(graph.num_nodes(t)) for t in {src_type, dst_type}}
    candidates = []
    for block in blocks:
        inside = matrix[block.rows][:, block.cols]
        members: dict[str, list[str]] = {}
        for node_type, idx in ((src_type, block.rows), (dst_type, block.cols)):
            ids = graph.node_ids[node_type].gather(idx).to_list()
            members[node_type] = sorted(set(members.get(node_type, [])) | set(ids))
            scores[node_type][idx] = np.maximum(scores[node_type][idx], block.density)
        candidates.append(RingCandidate(
            members=members, density=block.density, n_edges=int(inside.nnz),
            amount=float(amounts[block.rows][:, block.cols].sum()), relation=edge_type,
            meta={"weighting": weighting}))
    return candidates, scores


def excess_evidence(matrix: sp.spmatrix, quantile: float = 0.9) -> sp.csr_matrix:
    """Edge evidence log+(a / a_q): how many e-folds an edge's value exceeds the relation's
    ``quantile`` edge value.

    Most honest edges weigh exactly 0 and drop out, so the honest mass that swamps plain
    average-degree peeling on a claims graph (facility blocks, chronic patients and their
    regular doctor) is gone, while repeated high-value interactions keep a weight that
    grows with the log of their money.

    Parameters
    ----------
    matrix : (n_rows, n_cols), non-negative edge values (e.g. yuan per doctor-patient pair).
    quantile : in [0, 1); the reference value a_q is this quantile of the stored edge values.

    Returns
    -------
    csr_matrix float64 of the same shape, zeros eliminated.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    out = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    out.data = np.maximum(out.data, 0.0)
    out.eliminate_zeros()
    if out.nnz == 0:
        return out
    reference = float(np.quantile(out.data, quantile))
    if reference <= 0.0:
        reference = float(out.data.min())
    out.data = np.log(np.maximum(out.data, reference) / reference)
    out.eliminate_zeros()
    return out


def claims_evidence(graph: ClaimsGraph, quantile: float = 0.9,
                    evidence: str = "amount") -> sp.csr_matrix:
    """The tripartite ring evidence of a claims graph as one bipartite matrix.

    Rows are patients; columns are doctors (``treats``: the claims between doctor and
    patient, which include the pharmacy sales the doctor prescribed) followed by
    pharmacies (``fills_at``).  A collusion ring is a block of recruited patients, the
    doctors they all see and the pharmacy they all fill at, so its doctors and pharmacy
    land in the same block as columns.

    Parameters
    ----------
    graph : a claims graph with ``treats`` and ``fills_at``.
    quantile : reference quantile of :func:`excess_evidence`, per relation.
    evidence : ``"amount"``: :func:`excess_evidence` of the edge's total amount (repeated
        and high-value interactions both raise it); ``"high_value"``: the same, kept only
        on edges whose mean amount per claim also exceeds the relation's ``quantile`` of
        per-claim means (many cheap claims, e.g. a chronic patient's refills with his
        regular doctor, then carry no weight).

    Returns
    -------
    csr_matrix float64 (n_patients, n_doctors + n_pharmacies).
    """
    if evidence not in EVIDENCE:
        raise ValueError(f"evidence must be one of {EVIDENCE}, got {evidence!r}")
    missing = [et for et in (TREATS, FILLS) if et not in graph.edge_types]
    if missing:
        raise ValueError(f"claims ring search needs relations {missing}; edge types: "
                         f"{graph.edge_types}")
    parts = []
    for edge_type in (TREATS, FILLS):
        amount = graph.adjacency(edge_type, "amount")
        weight = excess_evidence(amount, quantile)
        if evidence == "high_value":
            count = graph.adjacency(edge_type, "count")
            per_claim = sp.csr_matrix(amount.multiply(count.power(-1.0)))
            weight = sp.csr_matrix(weight.multiply(excess_evidence(per_claim, quantile) > 0))
            weight.eliminate_zeros()
        parts.append(weight.T if edge_type == TREATS else weight)
    return sp.csr_matrix(sp.hstack(parts))


def shuffled_null(matrix: sp.spmatrix, seed: int = 0) -> sp.csr_matrix:
    """A degree-preserving random copy of a bipartite matrix: the column end of every edge
    is permuted (seeded), so each row keeps its edges and weights and each column its edge
    count; duplicated pairs are summed.  What peeling finds here is density by chance."""
    coo = sp.coo_matrix(matrix)
    cols = np.random.default_rng(seed).permutation(coo.col)
    return sp.csr_matrix((coo.data, (coo.row, cols)), shape=coo.shape)


def expand_block(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                 share: float = 0.5, min_links: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Grow a peeled block by the rows, then the columns, tied to most of it.

    Average-degree density drops a ring's lighter members (a recruited patient with fewer
    or cheaper cycles lowers g(S) although he belongs to the ring) and iterated peeling
    removes a ring's doctors with its first block.  A row joins when it has edges to at
    least max(``min_links``, ``share`` x |cols|) of the block's columns; then a column
    joins when it has edges to at least max(``min_links``, ``share`` x |rows|) rows.

    Returns
    -------
    (rows, cols): sorted int64 indices, supersets of the input.
    """
    binary = sp.csr_matrix(matrix, copy=True)
    binary.data = np.ones_like(binary.data)
    col_mask = np.zeros(matrix.shape[1])
    col_mask[cols] = 1.0
    links = binary @ col_mask
    need = max(min_links, share * len(cols))
    rows = np.union1d(rows, np.flatnonzero(links >= need)).astype(np.int64)
    row_mask = np.zeros(matrix.shape[0])
    row_mask[rows] = 1.0
    links = binary.T @ row_mask
    need = max(min_links, share * len(rows))
    cols = np.union1d(cols, np.flatnonzero(links >= need)).astype(np.int64)
    return rows, cols


def find_claims_rings(graph: ClaimsGraph, max_rings: int = 200, quantile: float = 0.9,
                      evidence: str = "amount", weighting: str = "log", c: float = 5.0,
                      min_doctors: int = 2, min_patients: int = 3, significance: float = 1.0,
                      expand: float = 0.5, null_rounds: int = 3, seed: int = 0,
                      ) -> tuple[list[RingCandidate], dict[str, np.ndarray]]:
    """Collusion-ring candidates (patients, doctors, pharmacies) of a claims graph.

    1. Evidence matrix patients x (doctors + pharmacies) (:func:`claims_evidence`).
    2. Null density: the densest block FRAUDAR finds on a degree-preserving shuffle of
       that matrix (:func:`shuffled_null`; median over ``null_rounds`` seeds) times
       ``significance`` is the bar a block must beat: what the same degrees and weights
       give by chance.
    3. Iterated FRAUDAR peeling (:func:`peel_blocks`, log column weighting) until a block's
       density is at or below the bar or ``max_rings`` blocks are out.
    4. A block is a ring candidate when, after :func:`expand_block` (``expand`` = share
       of the block a member must link to), it holds at least ``min_doctors`` doctors and
       ``min_patients`` patients and its median patient has evidence edges to at least
       min(``min_doctors``, 2) of its doctors: one doctor with his patients, or a pharmacy
       with a few big one-off sales and their prescribers, is not a ring.

    Parameters
    ----------
    graph : a claims graph with ``treats`` and ``fills_at`` (:func:`build_claims_graph`).
    max_rings : most blocks peeled (a cap; the null bar normally stops earlier).
    quantile, evidence : edge evidence (see :func:`claims_evidence`).
    weighting, c : FRAUDAR column weighting (see :func:`column_weights`).
    min_doctors, min_patients : structural test of a ring (see 4.).
    significance : multiple of the null density a block must exceed.
    expand : see :func:`expand_block` (0 disables expansion).
    null_rounds : number of shuffles (seeds ``seed``, ``seed + 1``, ...).
    seed : seed of the first null shuffle.

    Returns
    -------
    candidates : list of :class:`RingCandidate` (members patient / doctor / pharmacy,
        density g(S) under the evidence weights, ``n_edges`` evidence edges inside,
        ``amount`` yuan of all claims between its doctors and patients), densest first;
        ``meta`` holds the null bar.
    scores : node type -> float64 (n_t,) density of the densest candidate holding the node,
        0 elsewhere (patient, doctor, pharmacy).
    """
    matrix = claims_evidence(graph, quantile, evidence)
    n_doctors = graph.num_nodes("doctor")
    w = column_weights(matrix, weighting, c)
    null = [peel(shuffled_null(matrix, seed + k), col_weight=w).density
            for k in range(null_rounds)]
    bar = significance * float(np.median(null)) if null else 0.0
    blocks = peel_blocks(matrix, n_blocks=max_rings, col_weight=w, min_density=bar,
                         relative_density=0.0)
    amounts = graph.adjacency(TREATS, "amount")
    scores = {t: np.zeros(graph.num_nodes(t)) for t in ("patient", "doctor", "pharmacy")}
    candidates = []
    for block in blocks:                                        # one iteration per block
        rows, cols = block.rows, block.cols
        if expand > 0:
            rows, cols = expand_block(matrix, rows, cols, share=expand)
        doctors, pharmacies = cols[cols < n_doctors], cols[cols >= n_doctors] - n_doctors
        if len(doctors) < min_doctors or len(rows) < min_patients:
            continue
        # the same patients see several of the ring's doctors (a pharmacy with a few
        # big one-off sales and their prescribers is another typology)
        seen = np.diff(sp.csr_matrix(matrix[rows][:, doctors]).indptr)
        if np.median(seen) < min(min_doctors, 2):
            continue
        members = {}
        for node_type, idx in (("patient", rows), ("doctor", doctors), ("pharmacy", pharmacies)):
            members[node_type] = sorted(graph.node_ids[node_type].gather(idx).to_list())
            scores[node_type][idx] = np.maximum(scores[node_type][idx], block.density)
        candidates.append(RingCandidate(
            members=members, density=block.density, n_edges=int(matrix[rows][:, cols].nnz),
            amount=float(amounts[doctors][:, rows].sum()), relation=None,
            meta={"method": "claims_evidence", "evidence": evidence, "quantile": quantile,
                  "null_density": bar}))
    candidates.sort(key=lambda cand: -cand.density)
    return candidates, scores


def ring_recovery(candidates: list[RingCandidate] | list[set[str]],
                  true_rings: dict[str, set[str]], threshold: float = 0.5,
                  universe: set[str] | None = None) -> dict:
    """Match candidates to true rings by Jaccard similarity.

    Parameters
    ----------
    candidates : RingCandidate objects or plain id sets.
    true_rings : ring_id -> set of entity ids.
    threshold : Jaccard at or above which a candidate recovers a ring.
    universe : when given, true rings are first restricted to these ids (e.g. only doctors
        and patients when candidates come from the doctor x patient graph).

    Returns
    -------
    dict with ``per_ring`` (ring_id -> best Jaccard), ``precision`` (share of candidates
    matching some ring at >= threshold), ``recall`` (share of rings matched) and
    ``n_candidates`` / ``n_rings``.
    """
    sets = [c.member_set() if isinstance(c, RingCandidate) else set(c) for c in candidates]
    rings = {r: (set(m) & universe if universe is not None else set(m)) for r, m in true_rings.items()}
    rings = {r: m for r, m in rings.items() if m}
    jac = np.zeros((len(rings), len(sets)))
    for i, members in enumerate(rings.values()):
        for j, cand in enumerate(sets):
            union = len(members | cand)
            jac[i, j] = len(members & cand) / union if union else 0.0
    per_ring = {r: float(jac[i].max()) if sets else 0.0 for i, r in enumerate(rings)}
    hit = jac >= threshold
    return {
        "per_ring": per_ring,
        "precision": float(hit.any(axis=0).mean()) if sets else 0.0,
        "recall": float(hit.any(axis=1).mean()) if rings else 0.0,
        "n_candidates": len(sets),
        "n_rings": len(rings),
    }


__all__ = ["EDGE_ATTRS", "PeelResult", "RingCandidate", "claims_evidence", "column_weights",
           "excess_evidence", "expand_block", "find_claims_rings", "find_rings", "peel",
           "peel_blocks", "ring_recovery", "shuffled_null"]
