"""``ring``: collusion-ring candidates by dense-subgraph peeling (``medfraud.graph.ring``).

On a claims graph (no ``relations`` given) it runs
:func:`~medfraud.graph.ring.find_claims_rings`: FRAUDAR peeling of the patients x
(doctors + pharmacies) evidence matrix (excess money per edge), blocks kept when denser
than on a degree-preserving shuffle and holding several doctors and patients; each
candidate lists its patients, doctors and pharmacies.  With
``relations`` (e.g. a generic graph) it peels each listed bipartite relation with
:func:`~medfraud.graph.ring.find_rings`.  Every node of the scored type gets the density of
the densest candidate holding it (0 outside every candidate).  Unsupervised and
transductive: ``fit`` searches the fitting graph and keeps ``candidates_``; ``score``
searches the graph it is given (reusing the fitted result when it is the same graph), so
scores depend only on the data given.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import polars as pl

from medfraud.detectors.base import register, score_frame
from medfraud.detectors.graph_base import GraphDetector
from medfraud.features.frameset import FeatureSet
from medfraud.graph.core import ClaimsGraph, EdgeType, require_graph
from medfraud.graph.ring import FILLS, TREATS, RingCandidate, find_claims_rings, find_rings
from medfraud.labels import Labels

# find_claims_rings parameters, passed through from the detector's parameters
CLAIMS_PARAMS = ("max_rings", "quantile", "evidence", "weighting", "c", "min_doctors",
                 "min_patients", "significance", "expand", "null_rounds", "seed")


@register("ring")
class RingDetector(GraphDetector):
    """Dense-subgraph ring detector.

    Parameters
    ----------
    level : doctor, patient or pharmacy (for a generic graph, any level with ``node_type``).
    node_type : graph node type scored (default ``level``).
    relations : None (claims graph: tripartite evidence search) or a list of
        [src, relation, dst] to peel one by one (required on a generic graph).
    weighting, c : FRAUDAR column weighting, "log" (1 / log(deg + c)) or "none" (Charikar).

    Claims search (see :func:`medfraud.graph.ring.find_claims_rings`): ``max_rings`` (200),
    ``quantile`` (0.9), ``evidence`` ("amount" or "high_value"), ``min_doctors`` (2),
    ``min_patients`` (3), ``significance`` (1.0), ``expand`` (0.5), ``null_rounds`` (3),
    ``seed`` (0).

    Per-relation search (see :func:`medfraud.graph.ring.find_rings`): ``n_blocks`` (10 per
    relation), ``weight`` (None for 0/1 edges, or an edge attribute such as "count"),
    ``min_size``, ``min_density``, ``relative_density``.

    Attributes
    ----------
    candidates_ : list of :class:`~medfraud.graph.ring.RingCandidate` found by ``fit``,
        densest first.
    """

    supervised = False
    defaults: ClassVar[dict[str, Any]] = {
        "node_type": None, "relations": None, "weighting": "log", "c": 5.0,
        # claims search
        "max_rings": 200, "quantile": 0.9, "evidence": "amount", "min_doctors": 2,
        "min_patients": 3, "significance": 1.0, "expand": 0.5, "null_rounds": 3, "seed": 0,
        # per-relation search
        "n_blocks": 10, "weight": None, "min_size": 3, "min_density": 0.0,
        "relative_density": 0.75}

    def _relations(self, graph: ClaimsGraph) -> list[EdgeType]:
        relations = [tuple(r) for r in self._p("relations") or []]
        if not relations:
            lacking = [r for r in (TREATS, FILLS) if r not in graph.edge_types]
            raise ValueError(f"{self.name}: no relations given, and the claims search needs "
                             f"{lacking}, not in the graph; edge types: {graph.edge_types}; set "
                             "relations=[[src, relation, dst], ...]")
        missing = [r for r in relations if r not in graph.edge_types]
        if missing:
            raise ValueError(f"{self.name}: relation(s) {missing} not in the graph; edge types: "
                             f"{graph.edge_types}")
        return relations

    def _search(self, graph: ClaimsGraph) -> tuple[list[RingCandidate], np.ndarray]:
        graph.require_node_type(self.node_type)
        if self._p("relations") is None and {TREATS, FILLS} <= set(graph.edge_types):
            found, per_type = find_claims_rings(graph, **{k: self._p(k) for k in CLAIMS_PARAMS})
            scores = per_type.get(self.node_type, np.zeros(graph.num_nodes(self.node_type)))
            return found, scores
        candidates: list[RingCandidate] = []
        scores = np.zeros(graph.num_nodes(self.node_type))
        for relation in self._relations(graph):
            found, per_type = find_rings(
                graph, relation, n_blocks=int(self._p("n_blocks")), weighting=self._p("weighting"),
                c=float(self._p("c")), weight=self._p("weight"),
                min_density=float(self._p("min_density")), min_size=int(self._p("min_size")),
                relative_density=float(self._p("relative_density")))
            candidates += found
            if self.node_type in per_type:
                scores = np.maximum(scores, per_type[self.node_type])
        candidates.sort(key=lambda c: -c.density)
        return candidates, scores

    def fit(self, features: FeatureSet, labels: Labels | None = None) -> RingDetector:
        graph = require_graph(features, self.name)
        self.candidates_, self.scores_ = self._search(graph)
        self._fitted_graph = graph
        return self

    def score(self, features: FeatureSet) -> pl.DataFrame:
        self._check_fitted("candidates_")
        graph = require_graph(features, self.name)
        if graph is self._fitted_graph:
            candidates, scores = self.candidates_, self.scores_
        else:
            candidates, scores = self._search(graph)
        ids = graph.node_ids[self.node_type]
        return score_frame(ids, scores, self._ring_reasons(candidates, ids))

    def to_state(self) -> dict[str, Any]:
        """{"family", "params", "candidates"}: JSON only; scoring re-runs the search."""
        self._check_fitted("candidates_")
        return {"family": self.family, "params": self.get_params(), "candidates": [
            {"members": c.members, "density": c.density, "n_edges": c.n_edges,
             "amount": c.amount, "relation": list(c.relation) if c.relation else None,
             "meta": c.meta} for c in self.candidates_]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RingDetector:
        detector = cls(**state["params"])
        detector.candidates_ = [
            RingCandidate(members=c["members"], density=c["density"], n_edges=c["n_edges"],
                          amount=c["amount"],
                          relation=tuple(c["relation"]) if c["relation"] else None,
                          meta=c.get("meta", {}))
            for c in state["candidates"]]
        detector.scores_ = None
        detector._fitted_graph = None
        return detector

    def _ring_reasons(self, candidates: list[RingCandidate], ids: pl.Series) -> pl.Series:
        """Reason per node: rank and relation of the densest block holding it, else none
        (``ring_<rank>_claims`` for a candidate of the claims search)."""
        members = pl.DataFrame({
            "reason": [f"ring_{k}_{c.relation[1] if c.relation else 'claims'}"
                       for k, c in enumerate(candidates)],
            "id": [c.members.get(self.node_type, []) for c in candidates],
        }, schema={"reason": pl.String, "id": pl.List(pl.String)}).explode("id")
        members = members.drop_nulls("id").unique("id", keep="first", maintain_order=True)
        joined = pl.DataFrame({"id": ids.cast(pl.String)}).join(members, on="id", how="left",
                                                                maintain_order="left")
        return joined.select(pl.when(pl.col("reason").is_null())
                             .then(pl.lit([], pl.List(pl.String)))
                             .otherwise(pl.concat_list("reason")).alias("reasons"))["reasons"]
