import math

import polars as pl
import pytest
from eval_toys import IDS, LABELS, make_labels, scores_frame

from medfraud.evaluate.report import evaluate_levels, metrics_table, to_markdown


def test_evaluate_levels_writes_figures_and_merges_levels(tmp_path):
    labels = make_labels([("C0", "upcoding")], [("doctor", "D1", "collusion_ring")])
    doctors = pl.DataFrame({"id": ["D0", "D1", "D2"], "score": [0.1, 0.9, 0.2]})
    out = evaluate_levels({"claim": scores_frame(range(10, 0, -1)), "doctor": doctors}, labels,
                          {"claim": pl.Series(IDS), "doctor": doctors["id"]}, figures_dir=tmp_path)
    assert out["claim.upcoding.auroc"] == 1.0 and out["doctor.collusion_ring.auroc"] == 1.0
    assert {p.name for p in tmp_path.iterdir()} == {f"{lvl}_{kind}.png" for lvl in ("claim", "doctor")
                                                   for kind in ("pr", "roc", "hist")}
    with pytest.raises(KeyError, match="no ids in scope for level 'doctor'"):
        evaluate_levels({"doctor": doctors}, labels, {"claim": pl.Series(IDS)})


def test_metrics_table_and_markdown():
    from medfraud.evaluate.metrics import evaluate_scores

    m = evaluate_scores(scores_frame(range(10, 0, -1)), "claim", LABELS, pl.Series(IDS),
                        typologies=["upcoding", "ghost_bed"])
    table = metrics_table(m)
    assert table.columns[:5] == ["level", "typology", "auroc", "auprc", "rec_at_k"]
    assert table["typology"].to_list() == ["all", "upcoding", "ghost_bed"]
    assert table.filter(pl.col("typology") == "upcoding")["auprc"][0] == 1.0
    assert math.isnan(table.filter(pl.col("typology") == "ghost_bed")["auroc"][0])
    md = to_markdown(table)
    assert md.splitlines()[0].startswith("| level | typology | auroc")
    assert "| claim | ghost_bed | – |" in md
    split = metrics_table({f"test.{k}": v for k, v in m.items()})
    assert split.columns[:3] == ["split", "level", "typology"]
    with pytest.raises(ValueError, match="not level.typology.metric"):
        metrics_table({"auroc": 1.0})
