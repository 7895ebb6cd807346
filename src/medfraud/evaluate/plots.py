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
             typologies: Sequence[str] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores in scope, shape (n,), and a binary target per typology with >= 1 positive and negative."""
    ranked = ranked_in_scope(scores, ids_in_scope)
    chosen = list(typologies) if typologies is not None else default_typologies(level, labels)
    targets = {}
    for typology in [ALL, *[t for t in chosen if t != ALL]]:
        y = labels.target(level, ranked["id"].alias(LEVEL_ID[level]), None if typology == ALL else typology,
                          source="full").to_numpy().astype(np.int8)
        if 0 < y.sum() < len(y):
            targets[typology] = y
    return ranked["score"].to_numpy(), targets


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
    s, targets = _targets(scores, level, labels, ids_in_scope, typologies)
    fig, ax = _new_figure(title or f"Precision–recall at {level} level")
    for typology, y in targets.items():
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
    s, targets = _targets(scores, level, labels, ids_in_scope, typologies)
    fig, ax = _new_figure(title or f"ROC at {level} level")
    for typology, y in targets.items():
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
