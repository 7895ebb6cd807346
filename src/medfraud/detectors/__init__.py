"""Detector families; importing this package registers every family.

``FAMILY_MODULES`` lists the module of each family; add a family by adding its module
here (graph families: gnn, graph_tree, ring are listed by their author).
"""

from importlib import import_module

from medfraud.detectors.base import (REGISTRY, SCORE_SCHEMA, Detector, NotFittedError, make_detector,
                                     register, score_frame)
from medfraud.detectors.state import detector_from_state

# --- FAMILY_MODULES: one entry per detector family module -------------------------------------
FAMILY_MODULES = [
    "medfraud.detectors.rules",
    "medfraud.detectors.pyod_family",
    "medfraud.detectors.lightgbm_family",
    "medfraud.detectors.ensemble",
    # graph families (gnn, graph_tree, ring) are appended here by their author
    "medfraud.detectors.gnn",
    "medfraud.detectors.graph_tree",
    "medfraud.detectors.ring",
]

for _module in FAMILY_MODULES:
    import_module(_module)

__all__ = ["REGISTRY", "SCORE_SCHEMA", "Detector", "NotFittedError", "make_detector", "register",
           "score_frame", "detector_from_state", "FAMILY_MODULES"]
