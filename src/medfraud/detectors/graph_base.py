"""What the graph families share: parameters with class-level defaults and a node type.

``gnn`` and ``ring`` take many optional parameters; each family lists them with their
defaults in ``defaults``, so an unknown name fails at construction (never silently ignored)
and ``get_params`` holds only what the config set.
"""

from __future__ import annotations

from typing import Any, ClassVar

from medfraud.detectors.base import Detector


class GraphDetector(Detector):
    """A detector over ``FeatureSet.graph`` whose parameters default to ``defaults``.

    Parameters
    ----------
    level : the level scored; its graph nodes are ``node_type`` (defaults to ``level``).
    params : any keys of ``defaults``.
    """

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, level: str = "doctor", **params: Any):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.family}: unknown parameter(s) {sorted(unknown)}; known: "
                             f"{sorted(self.defaults)}")
        super().__init__(level, **params)

    def _p(self, key: str) -> Any:
        return self.params.get(key, self.defaults[key])

    @property
    def node_type(self) -> str:
        return self._p("node_type") or self.level
