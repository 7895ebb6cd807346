"""Per-typology evaluation report: metrics over levels, a tidy table, Markdown, figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from medfraud.evaluate.metrics import evaluate_scores, metric_names
from medfraud.evaluate.plots import plot_pr_curves, plot_roc_curves, plot_score_histogram
from medfraud.labels import Labels


def evaluate_levels(scores: Mapping[str, pl.DataFrame], labels: Labels, ids_in_scope: Mapping[str, pl.Series],
                    budgets: Sequence[float] = (0.01, 0.05),
                    amounts: Mapping[str, pl.DataFrame] | None = None,
                    typologies: Mapping[str, Sequence[str]] | None = None,
                    figures_dir: str | Path | None = None) -> dict[str, float]:
    """Evaluate one detector's scores at every level it scored.

    Parameters
    ----------
    scores : level -> score frame (id, score, …).
    labels : ground truth.
    ids_in_scope : level -> ids evaluated (e.g. the test split); a level missing here is
        an error, so a detector is never silently evaluated on its training rows.
    budgets : audit budgets (fractions).
    amounts : level -> (id, amount) frame for the money metrics.
    typologies : level -> typologies to report (default: see ``evaluate_scores``).
    figures_dir : when given, writes ``<level>_pr.png``, ``<level>_roc.png`` and
        ``<level>_hist.png`` there.

    Returns
    -------
    dict ``"<level>.<typology>.<metric>" -> float`` over all levels.
    """
    out: dict[str, float] = {}
    for level, frame in scores.items():
        if level not in ids_in_scope:
            raise KeyError(f"no ids in scope for level {level!r}; have {sorted(ids_in_scope)}")
        chosen = typologies.get(level) if typologies else None
        out |= evaluate_scores(frame, level, labels, ids_in_scope[level], chosen, budgets,
                               amounts.get(level) if amounts else None)
        if figures_dir is not None:
            folder = Path(figures_dir)
            plot_pr_curves(frame, level, labels, ids_in_scope[level], chosen, folder / f"{level}_pr.png")
            plot_roc_curves(frame, level, labels, ids_in_scope[level], chosen, folder / f"{level}_roc.png")
            plot_score_histogram(frame, level, labels, ids_in_scope[level], path=folder / f"{level}_hist.png")
    return out


def metrics_table(metrics: Mapping[str, float], budgets: Sequence[float] = (0.01, 0.05)) -> pl.DataFrame:
    """Metric dict -> one row per (split?, level, typology), one column per metric.

    Keys may be ``level.typology.metric`` or ``split.level.typology.metric`` (the
    tracking layer's form); a ``split`` column appears only in the second case.
    """
    rows = []
    for key, value in metrics.items():
        parts = key.split(".")
        if len(parts) == 3:
            rows.append({"split": None, "level": parts[0], "typology": parts[1], "metric": parts[2],
                         "value": value})
        elif len(parts) == 4:
            rows.append({"split": parts[0], "level": parts[1], "typology": parts[2], "metric": parts[3],
                         "value": value})
        else:
            raise ValueError(f"metric key {key!r} is not level.typology.metric or "
                             "split.level.typology.metric")
    schema = {"split": pl.String, "level": pl.String, "typology": pl.String, "metric": pl.String,
              "value": pl.Float64}
    long = pl.DataFrame(rows, schema=schema)
    index = ["split", "level", "typology"] if long["split"].is_not_null().any() else ["level", "typology"]
    wide = long.pivot(on="metric", index=index, values="value", maintain_order=True)
    ordered = [m for m in metric_names(budgets) if m in wide.columns]
    extra = [c for c in wide.columns if c not in index and c not in ordered]
    return wide.select(*index, *ordered, *extra)


def to_markdown(table: pl.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table; floats rounded to ``digits``, NaN shown as ``–``."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return "–" if value != value else f"{value:.{digits}f}"
        return str(value)

    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([header, rule, *body]) + "\n"
