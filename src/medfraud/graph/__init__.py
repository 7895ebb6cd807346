"""The claims graph (PyG ``HeteroData``), the generic graph format and ring discovery."""

from medfraud.graph.build import RELATIONS, build_claims_graph
from medfraud.graph.core import EDGE_ATTRS, ClaimsGraph, require_graph
from medfraud.graph.generic import GraphFormatError, load_generic_graph, make_fraudar_benchmark
from medfraud.graph.ring import RingCandidate, find_rings, peel, peel_blocks, ring_recovery

__all__ = ["EDGE_ATTRS", "RELATIONS", "ClaimsGraph", "GraphFormatError", "RingCandidate",
           "build_claims_graph", "find_rings", "load_generic_graph", "make_fraudar_benchmark",
           "peel", "peel_blocks", "require_graph", "ring_recovery"]
