"""Evaluation figures: PR and ROC curves per typology, score histogram by class.

Every function returns a :class:`matplotlib.figure.Figure` built on the non-interactive
Agg backend (no display needed) and, when ``path`` is given, saves it there (format
from the suffix, e.g. ``.png``), creating parent folders.  Figures are not registered
with pyplot, so nothing leaks between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from medfraud.evaluate.metrics import ALL, default_typologies, ranked_in_scope
from medfraud.labels import Labels
from medfraud.schema import LEVEL_ID


def _targets(scores: pl.DataFrame, level: str, labels: Labels, ids_in_scope: pl.Series,
             typologies: Sequence[str] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per typology (and ``all``) with >= 1 positive and negative: (scores, binary target).

    Same scope as :func:`medfraud.evaluate.metrics.evaluate_scores`: for a typology, rows
    of other typologies only are left out, so curves and metrics agree.
    """
    ranked = ranked_in_scope(scores, ids_in_scope)
    chosen = list(typologies) if typologies is not None else default_typologies(level, labels)
    ids = ranked["id"].alias(LEVEL_ID[level])
    s = ranked["score"].to_numpy()
    any_fraud = labels.target(level, ids, None, source="full").to_numpy().astype(bool)
    targets = {}
    for typology in [ALL, *[t for t in chosen if t != ALL]]:
        if typology == ALL:
            y, keep = any_fraud.astype(np.int8), np.ones(len(s), dtype=bool)
        else:
            y = labels.target(level, ids, typology, source="full").to_numpy().astype(np.int8)
            keep = (y == 1) | ~any_fraud
        y = y[keep]
        if 0 < y.sum() < len(y):
            targets[typology] = (s[keep], y)
    return targets


def _new_figure(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


def plot_pr_curves(scores: pl.DataFrame, level: str, labels: Labels, ids_in_scope: pl.Series,
                   typologies: Sequence[str] | None = None, path: str | Path | None = None,
                   title: str | None = None) -> Figure:
    """Precision–recall curve per typology (and ``all``) with AUPRC in the legend.

    Arguments are those of :func:`medfraud.evaluate.metrics.evaluate_scores`; typologies
    without positives in scope are left out.  The dashed line of each colour is that
    typology's prevalence (the AUPRC of a random ranking).
    """
    targets = _targets(scores, level, labels, ids_in_scope, typologies)
    fig, ax = _new_figure(title or f"Precision–recall at {level} level")
    for typology, (s, y) in targets.items():
        precision, recall, _ = precision_recall_curve(y, s)
        line, = ax.step(recall, precision, where="post",
                        label=f"{typology} (AUPRC {average_precision_score(y, s):.3f})")
        ax.axhline(y.mean(), color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if targets:
        ax.legend(fontsize="small", loc="best")
    return _save(fig, path)


def plot_roc_curves(scores: pl.DataFrame, level: str, labels: Labels, ids_in_scope: pl.Series,
                    typologies: Sequence[str] | None = None, path: str | Path | None = None,
                    title: str | None = None) -> Figure:
    """ROC curve per typology (and ``all``) with AUROC in the legend; diagonal = random."""
    targets = _targets(scores, level, labels, ids_in_scope, typologies)
    fig, ax = _new_figure(title or f"ROC at {level} level")
    for typology, (s, y) in targets.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{typology} (AUROC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if targets:
        ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


def plot_score_histogram(scores: pl.DataFrame, level: str, labels: Labels, ids_in_scope: pl.Series,
                         typology: str | None = None, bins: int = 50, path: str | Path | None = None,
                         title: str | None = None) -> Figure:
    """Histogram of scores of fraudulent vs other rows (densities, shared bins)."""
    ranked = ranked_in_scope(scores, ids_in_scope)
    y = labels.target(level, ranked["id"].alias(LEVEL_ID[level]), typology, source="full").to_numpy()
    s = ranked["score"].to_numpy()
    fig, ax = _new_figure(title or f"Scores at {level} level ({typology or ALL})")
    edges = np.histogram_bin_edges(s, bins=bins) if s.size else np.linspace(0, 1, bins + 1)
    for value, name in ((0, "not fraud"), (1, "fraud")):
        part = s[y == value]
        if part.size:
            ax.hist(part, bins=edges, density=True, alpha=0.55, label=f"{name} (n={part.size})")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    if s.size:
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_sweep(metrics: pl.DataFrame, x_values: dict[str, float], x_name: str,
               typology_levels: dict[str, str], metric: str = "auprc",
               path: str | Path | None = None) -> Figure:
    """``metric`` against a swept parameter, one panel per typology, one line per detector.

    Parameters
    ----------
    metrics : the runner's metrics table (columns point, detector, level, typology, ``metric``).
    x_values : sweep-point label (the ``point`` column) -> numeric value of the parameter.
    x_name : axis label, e.g. "camouflage".
    typology_levels : typology -> level it is judged at (panels, in this order).
    """
    panels = list(typology_levels)
    n_cols = min(5, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig = Figure(figsize=(3.2 * n_cols, 2.8 * n_rows), dpi=100)
    FigureCanvasAgg(fig)
    points = pl.DataFrame({"point": list(x_values), "x": [float(v) for v in x_values.values()]})
    table = metrics.join(points, on="point", how="inner")
    detectors = list(dict.fromkeys(table["detector"].to_list()))
    for i, typology in enumerate(panels):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        level = typology_levels[typology]
        ax.set_title(f"{typology} ({level})", fontsize=9)
        rows = table.filter((pl.col("typology") == typology) & (pl.col("level") == level))
        for k, detector in enumerate(detectors):
            line = rows.filter(pl.col("detector") == detector).sort("x")
            if line.height and line[metric].is_not_nan().any():
                # one colour per detector across panels, so the shared legend holds
                ax.plot(line["x"].to_numpy(), line[metric].to_numpy(), marker="o", label=detector,
                        color=f"C{k % 10}")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(x_name, fontsize=8)
        ax.set_ylabel(metric.upper(), fontsize=8)
        ax.tick_params(labelsize=7)
    handles, names = [], []
    for ax in fig.axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)
