import lightgbm as lgb
import numpy as np
import pytest

from medfraud.detectors.treeshap import VECTOR_ROWS, TreePredictor, TreeShap


def _data(n=3000, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[rng.random((n, d)) < 0.1] = np.nan
    X[rng.random((n, d)) < 0.1] = 0.0
    signal = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2])
    y = ((signal > 0.5) | (rng.random(n) < 0.05)).astype(int)
    return X, y


def _booster(X, y, **params):
    base = {"objective": "binary", "verbosity": -1, "num_leaves": 15, "max_depth": 6,
            "learning_rate": 0.1, "seed": 0, "deterministic": True, "num_threads": 1}
    return lgb.train({**base, **params}, lgb.Dataset(X, y), 40)


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False},
                                    {"num_leaves": 31, "max_depth": 8}])
def test_equals_lightgbm_pred_contrib(params):
    X, y = _data()
    booster = _booster(X, y, **params)
    explainer = TreeShap(booster, num_threads=2)
    assert explainer.fast
    ours = explainer.contributions(X[:700])
    theirs = booster.predict(X[:700], pred_contrib=True)
    assert ours.shape == theirs.shape == (700, X.shape[1] + 1)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    # Local accuracy: each row sums to the raw score.
    np.testing.assert_allclose(ours.sum(axis=1), booster.predict(X[:700], raw_score=True), atol=1e-9)


def test_single_threaded_and_single_row_agree():
    X, y = _data(seed=1)
    booster = _booster(X, y)
    full = TreeShap(booster, num_threads=2).contributions(X[:50])
    one = TreeShap(booster, num_threads=1).contributions(X[7:8])
    np.testing.assert_allclose(one[0], full[7], atol=1e-12)


def test_one_leaf_trees_add_to_the_expected_value_only():
    X, y = _data(n=200)
    booster = _booster(X, y, min_data_in_leaf=500)  # no split is possible
    ours = TreeShap(booster).contributions(X[:20])
    np.testing.assert_allclose(ours, booster.predict(X[:20], pred_contrib=True), atol=1e-12)
    assert np.all(ours[:, :-1] == 0)


def test_falls_back_to_lightgbm_for_categorical_splits_and_deep_paths(monkeypatch):
    X, y = _data()
    X_cat = X.copy()
    X_cat[:, 3] = np.random.default_rng(2).integers(0, 6, size=len(X))
    y_cat = np.where(X_cat[:, 3] == 2, 1, y)
    categorical = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 7,
                             "min_data_per_group": 5, "cat_smooth": 1, "num_threads": 1},
                            lgb.Dataset(X_cat, y_cat, categorical_feature=[3]), 20)
    explainer = TreeShap(categorical)
    assert not explainer.fast
    np.testing.assert_allclose(explainer.contributions(X_cat[:30]),
                               categorical.predict(X_cat[:30], pred_contrib=True), atol=1e-12)
    booster = _booster(X, y)
    monkeypatch.setattr("medfraud.detectors.treeshap.MAX_PATH_FEATURES", 3)
    deep = TreeShap(booster)  # paths of more than 3 distinct features: tables too large
    assert not deep.fast
    np.testing.assert_allclose(deep.contributions(X[:30]), booster.predict(X[:30], pred_contrib=True),
                               atol=1e-12)


def test_rejects_a_matrix_of_the_wrong_width():
    X, y = _data(n=300)
    with pytest.raises(ValueError, match=r"X must be \(n, 12\)"):
        TreeShap(_booster(X, y)).contributions(X[:, :5])


def test_trees_of_more_than_64_splits_fall_back():
    X, y = _data(n=4000, d=6)
    booster = _booster(X, y, num_leaves=90, max_depth=7, min_data_in_leaf=2)
    assert max(t["num_leaves"] for t in booster.dump_model()["tree_info"]) > 65
    explainer = TreeShap(booster)
    assert not explainer.fast
    np.testing.assert_allclose(explainer.contributions(X[:30]), booster.predict(X[:30], pred_contrib=True),
                               atol=1e-12)


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False},
                                    {"num_leaves": 31, "max_depth": 8}])
def test_few_rows_and_blocks_of_rows_equal_lightgbm_pred_contrib(params):
    """Inputs under VECTOR_ROWS rows take the row-by-row kernel; 2,500 rows on one thread
    cross the row blocks of the vectorised one."""
    X, y = _data()
    booster = _booster(X, y, **params)
    explainer = TreeShap(booster, num_threads=1)
    for rows in (X[3:3 + VECTOR_ROWS - 1], X[:2500]):
        np.testing.assert_allclose(explainer.contributions(rows), booster.predict(rows, pred_contrib=True),
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False},
                                    {"num_leaves": 31, "max_depth": 8}, {"sigmoid": 0.7}])
def test_predictor_equals_lightgbm_predict(params):
    X, y = _data()
    X[:50, :] = np.nan  # rows missing everywhere: every split's default direction
    X[50:100, :] = 0.0
    X[100:150, :] = 1e-36  # inside LightGBM's zero band (kZeroThreshold = 1e-35)
    booster = _booster(X, y, **params)
    predictor = TreePredictor(booster)
    assert predictor.fast
    for threads in (1, 2):
        np.testing.assert_allclose(predictor.predict(X, num_threads=threads), booster.predict(X),
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(predictor.predict(X[7:8]), booster.predict(X[7:8]), rtol=0, atol=1e-12)
    # Polars hands over Fortran-ordered matrices.
    np.testing.assert_allclose(predictor.predict(np.asfortranarray(X[:300])), booster.predict(X[:300]),
                               rtol=0, atol=1e-12)


def test_predictor_of_one_leaf_trees_gives_the_constant():
    X, y = _data(n=200)
    booster = _booster(X, y, min_data_in_leaf=500)
    np.testing.assert_allclose(TreePredictor(booster).predict(X[:20]), booster.predict(X[:20]), rtol=0,
                               atol=1e-12)


def test_predictor_falls_back_to_lightgbm():
    X, y = _data(n=2000, d=6)
    X_cat = X.copy()
    X_cat[:, 3] = np.random.default_rng(2).integers(0, 6, size=len(X))
    categorical = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 7,
                             "min_data_per_group": 5, "cat_smooth": 1, "num_threads": 1},
                            lgb.Dataset(X_cat, np.where(X_cat[:, 3] == 2, 1, y), categorical_feature=[3]), 20)
    wide = _booster(X, y, num_leaves=90, max_depth=-1, min_data_in_leaf=2)  # more than 64 leaves
    regression = _booster(X, X[:, 0] * 2.0, objective="regression")
    for booster, data in ((categorical, X_cat), (wide, X), (regression, X)):
        predictor = TreePredictor(booster)
        assert not predictor.fast
        np.testing.assert_array_equal(predictor.predict(data[:30]), booster.predict(data[:30]))


def test_predictor_rejects_a_matrix_of_the_wrong_width():
    X, y = _data(n=300)
    with pytest.raises(ValueError, match=r"X must be \(n, 12\)"):
        TreePredictor(_booster(X, y)).predict(X[:, :5])
