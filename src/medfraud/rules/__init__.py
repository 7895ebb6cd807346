"""The audit-rule engine: a rule catalogue (YAML data) evaluated by vectorised kinds.

Public API::

    load_catalogue(path=None) -> RuleCatalogue
    evaluate_rules(dataset, catalogue=None, *, window=None, partitions=None)
        -> pl.DataFrame   # hits
    evaluate_tables(tables, catalogue=None, window=None) -> pl.DataFrame
    summarise(hits) -> pl.DataFrame

See docs/rules.md for the catalogue format and every kind.
"""

from medfraud.rules.catalogue import (
    CatalogueError,
    Rule,
    RuleCatalogue,
    default_catalogue_path,
    load_catalogue,
)
from medfraud.rules.engine import (
    empty_hits,
    evaluate_rules,
    evaluate_tables,
    hits_schema,
    summarise,
    write_hits,
)
from medfraud.rules.registry import KINDS, KindParams, register_kind

__all__ = [
    "KINDS", "CatalogueError", "KindParams", "Rule", "RuleCatalogue",
    "default_catalogue_path", "empty_hits", "evaluate_rules", "evaluate_tables",
    "hits_schema", "load_catalogue", "register_kind", "summarise", "write_hits",
]
