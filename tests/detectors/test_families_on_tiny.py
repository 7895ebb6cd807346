"""Every family of this package on the generated ``tiny`` dataset, end to end with metrics."""

import math

import polars as pl
import pytest

from medfraud.detectors import SCORE_SCHEMA, make_detector
from medfraud.evaluate.metrics import evaluate_scores

FAST_LGB = {"n_estimators": 80, "early_stopping_rounds": 20, "num_threads": 1}


@pytest.fixture(scope="module")
def tiny(tiny_dataset):
    from medfraud.features import build_features
    from medfraud.labels import Labels
    from medfraud.rules.engine import evaluate_rules

    features = build_features(tiny_dataset)
    features.rule_hits = evaluate_rules(tiny_dataset)
    return features, Labels.from_dataset(tiny_dataset)


@pytest.mark.parametrize("level", ["claim", "patient", "doctor"])
def test_families_on_tiny(tiny, level):
    features, labels = tiny
    configs = {"rules": {}, "pyod": {"model": "IForest"}, "lightgbm": FAST_LGB,
               "ensemble": {"members": [{"family": "rules", "level": "claim"},
                                        {"family": "pyod", "level": level, "model": "ECOD"},
                                        {"family": "lightgbm", "level": level, **FAST_LGB}],
                            "method": "stacked"}}
    auprc = {}
    for family, params in configs.items():
        scores = make_detector(family, level=level, **params).fit(features, labels).score(features)
        assert scores.schema == pl.Schema(SCORE_SCHEMA)
        assert scores.height == features.frame(level).height
        metrics = evaluate_scores(scores, level, labels, features.ids(level),
                                  amounts=features.frame("claim").select(pl.col("claim_id").alias("id"),
                                                                         pl.col("fund_paid").alias("amount"))
                                  if level == "claim" else None)
        auprc[family] = metrics[f"{level}.all.auprc"]
        prevalence = labels.target(level, features.ids(level)).mean()
        assert not math.isnan(auprc[family])
        # every family must rank fraud above chance on its own training data
        assert auprc[family] > prevalence, (family, auprc[family], prevalence)
    assert auprc["lightgbm"] > 0.5
