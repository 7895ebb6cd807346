import numpy as np
import polars as pl
from matplotlib.figure import Figure
from eval_toys import IDS, LABELS, scores_frame

from medfraud.evaluate.plots import plot_pr_curves, plot_roc_curves, plot_score_histogram

PNG_MAGIC = b"\x89PNG"


def test_curves_written_with_one_line_per_typology(tmp_path):
    scores = scores_frame([10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    pr = plot_pr_curves(scores, "claim", LABELS, pl.Series(IDS), path=tmp_path / "figs" / "pr.png")
    roc = plot_roc_curves(scores, "claim", LABELS, pl.Series(IDS), path=tmp_path / "roc.png")
    for fig, name in ((pr, "figs/pr.png"), (roc, "roc.png")):
        assert isinstance(fig, Figure)
        assert (tmp_path / name).read_bytes()[:4] == PNG_MAGIC
    # typologies with positives in scope: all, upcoding, duplicate_billing (others left out)
    labels = [t.get_text() for t in pr.axes[0].get_legend().get_texts()]
    assert [t.split(" ")[0] for t in labels] == ["all", "upcoding", "duplicate_billing"]
    assert "AUPRC 1.000" in labels[0]
    roc_labels = [t.get_text() for t in roc.axes[0].get_legend().get_texts()]
    assert "AUROC 1.000" in roc_labels[0]


def test_histogram_splits_classes(tmp_path):
    scores = scores_frame(np.linspace(0, 1, 10))
    fig = plot_score_histogram(scores, "claim", LABELS, pl.Series(IDS), bins=5, path=tmp_path / "h.svg")
    assert (tmp_path / "h.svg").read_text().lstrip().startswith("<?xml")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["not fraud (n=7)", "fraud (n=3)"]


def test_no_path_writes_nothing(tmp_path):
    plot_roc_curves(scores_frame(np.arange(10)), "claim", LABELS, pl.Series(IDS))
    assert list(tmp_path.iterdir()) == []


def test_sweep_plot_draws_one_panel_per_typology(tmp_path):
    import polars as pl

    from medfraud.evaluate.plots import plot_sweep

    metrics = pl.DataFrame({
        "point": ["c=0", "c=0.5", "c=0", "c=0.5"], "detector": ["a", "a", "b", "b"],
        "level": ["claim"] * 4, "typology": ["upcoding"] * 4, "auprc": [0.9, 0.5, 0.4, 0.3]})
    fig = plot_sweep(metrics, {"c=0": 0.0, "c=0.5": 0.5}, "c", {"upcoding": "claim", "ghost_bed": "claim"},
                     path=tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    first = fig.axes[0]
    assert [tuple(line.get_ydata()) for line in first.get_lines()] == [(0.9, 0.5), (0.4, 0.3)]
    assert not fig.axes[1].get_lines()
    assert [line.get_color() for line in first.get_lines()] == ["C0", "C1"]
