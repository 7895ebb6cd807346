"""Exact path-dependent TreeSHAP for LightGBM boosters, from per-leaf tables.

LightGBM's ``predict(pred_contrib=True)`` runs Lundberg's recursive TreeSHAP: per row and
tree it costs about leaves × depth² path updates.  For a leaf, a row's contribution depends on
the row only through which of the leaf's path conditions it meets, one bit per distinct
feature on the path.  With trees a few levels deep there are few such patterns, so the
contributions of every (leaf, pattern) are computed once when the explainer is built (the
"Fast TreeSHAP v2" idea of Yang, 2021) and a row costs one pass over the splits plus a table
look-up per leaf.  The values are LightGBM's, up to float rounding (a test compares them).

Supported: numerical splits (LightGBM's missing-value rules included), binary or regression
boosters, paths of at most :data:`MAX_PATH_FEATURES` distinct features.  Anything else
(categorical splits, deeper paths, several classes) falls back to LightGBM's own
``pred_contrib``; :attr:`TreeShap.fast` says which is used.

:class:`TreePredictor` gives ``booster.predict``'s probabilities, bit for bit, from the same
flattened splits: every split of a tree is decided for a block of rows at once (vectorised,
no unpredictable branches) and the exit leaf is found from those decisions with
QuickScorer's bit masks (Lucchese et al., 2015), several times faster than LightGBM's
row-by-row walk.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import lightgbm as lgb
import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

MAX_PATH_FEATURES = 10  # table of 2^d × d values per leaf
MAX_LEAVES = 64  # a tree's reachable leaves are one 64-bit mask (TreePredictor)
ROWS_PER_THREAD = 256  # a thread is started per this many rows at least (REST calls: one)
ROW_BLOCK = 1024  # rows whose per-split decisions and accumulators stay in L1/L2 together
VECTOR_ROWS = 4  # fewer rows are explained one by one (vector loops cost more to set up)
_ZERO = 1e-35  # LightGBM's kZeroThreshold
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}


class TreeShap:
    """SHAP values of a LightGBM booster's raw score (log-odds for ``binary``).

    Parameters
    ----------
    booster : fitted ``lightgbm.Booster``.
    num_threads : threads over row blocks in :meth:`contributions`.

    Attributes
    ----------
    fast : bool, the table explainer is used (else LightGBM's ``pred_contrib``).
    """

    def __init__(self, booster: lgb.Booster, num_threads: int = 2):
        self.booster = booster
        self.num_threads = max(1, int(num_threads))
        self.n_features = booster.num_feature()
        model = booster.dump_model()
        trees = [info["tree_structure"] for info in model["tree_info"]]
        self.fast = model.get("num_class", 1) == 1 and _supported(trees)
        if self.fast:
            self._tables = _build_tables(trees)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features + 1) float64: SHAP value per feature, expected value last; each row
        sums to the raw score, as LightGBM's ``pred_contrib``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be (n, {self.n_features}), got {X.shape}")
        if not self.fast:
            return self.booster.predict(X, pred_contrib=True, num_threads=self.num_threads)
        t = self._tables
        columns = np.ascontiguousarray(X.T)
        out = np.empty((X.shape[0], self.n_features + 1))
        out[:, -1] = t["bias"]

        kernel = _explain_rows if X.shape[0] >= VECTOR_ROWS else _explain_few_rows

        def run(start: int, stop: int) -> None:
            kernel(columns, start, stop, out, t["tree_nodes"], t["tree_leaves"], t["feature"],
                   t["threshold"], t["nan_right"], t["zero_missing"], t["zero_right"], t["leaf_right"],
                   t["slot_mask"], t["leaf_d"], t["slot_start"], t["slot_feature"], t["table_start"],
                   t["table"])

        _over_row_blocks(run, X.shape[0], max(1, min(self.num_threads, X.shape[0] // ROWS_PER_THREAD)))
        return out

    def warm(self) -> None:
        """Load (or compile) the kernels of every input size, so that no call pays for it."""
        for n in (1, VECTOR_ROWS):
            self.contributions(np.zeros((n, self.n_features)))


class TreePredictor:
    """``booster.predict(X)`` (probabilities of a ``binary`` booster), bit for bit.

    Raw scores are the leaf values summed in tree order from 0, as LightGBM's; the
    probability is LightGBM's ``1 / (1 + exp(-sigmoid * raw))``.  Supported: one class,
    objective ``binary``, numerical splits, at most :data:`MAX_LEAVES` leaves per tree, no
    linear trees nor averaged (random forest) output; anything else falls back to
    ``booster.predict`` (:attr:`fast` says which is used).

    Parameters
    ----------
    booster : fitted ``lightgbm.Booster``; the trees ``predict`` uses by default (those of
        the best iteration, if the booster has one: ``dump_model``'s default too).
    """

    def __init__(self, booster: lgb.Booster):
        self.booster = booster
        self.n_features = booster.num_feature()
        model = booster.dump_model()
        trees = [info["tree_structure"] for info in model["tree_info"]]
        objective, *options = str(model.get("objective", "")).split()
        settings = dict(option.split(":", 1) for option in options if ":" in option)
        self.fast = (model.get("num_class", 1) == 1 and objective == "binary"
                     and not model.get("average_output", False) and _predictable(trees))
        if self.fast:
            self._sigmoid = float(settings.get("sigmoid", 1.0))
            self._forest = _build_forest(trees)

    def predict(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """(n,) float64 probabilities of rows X (n, n_features), over ``num_threads`` threads
        (one for fewer than 2 × :data:`ROWS_PER_THREAD` rows)."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be (n, {self.n_features}), got {X.shape}")
        if not self.fast:
            return self.booster.predict(X, num_threads=num_threads)
        # Feature-major: a split reads its feature for a block of rows contiguously (and
        # polars' Fortran-ordered matrices transpose without a copy).
        columns = np.ascontiguousarray(X.T, dtype=np.float64)
        out = np.empty(X.shape[0])
        f = self._forest
        sigmoid = self._sigmoid

        def run(start: int, stop: int) -> None:
            _predict_rows(columns, start, stop, sigmoid, out, f["tree_nodes"], f["tree_leaves"],
                          f["feature"], f["threshold"], f["nan_right"], f["zero_missing"],
                          f["zero_right"], f["keep"], f["leaf_value"])

        _over_row_blocks(run, X.shape[0], max(1, min(int(num_threads), X.shape[0] // ROWS_PER_THREAD)))
        return out

    def warm(self) -> None:
        """Load (or compile) the kernel, so that no call pays for it."""
        self.predict(np.zeros((1, self.n_features)))


def _over_row_blocks(run: Callable[[int, int], None], n: int, threads: int) -> None:
    """``run(start, stop)`` over ``threads`` contiguous blocks of n rows, on this thread when
    there is one (no pool to start: REST calls score a few rows)."""
    if n == 0:
        return
    if threads == 1:
        run(0, n)
        return
    bounds = [n * j // threads for j in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:  # the kernels release the GIL
        list(pool.map(run, bounds[:-1], bounds[1:]))


def _jit(**options):
    """``numba.njit`` with the compiled code cached on disk (a fresh process then loads it in
    a fraction of a second) where a cache folder is writable, in memory elsewhere."""
    def wrap(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # no writable cache location (read-only install)
            return numba.njit(**options)(function)
    return wrap


def _supported(trees: list[dict]) -> bool:
    def walk(node: dict, features: frozenset) -> bool:
        if "split_index" not in node:
            return True
        if node.get("decision_type") != "<=":
            return False
        features = features | {node["split_feature"]}
        if len(features) > MAX_PATH_FEATURES:
            return False
        return walk(node["left_child"], features) and walk(node["right_child"], features)

    def internal(node: dict) -> int:
        if "split_index" not in node:
            return 0
        return 1 + internal(node["left_child"]) + internal(node["right_child"])

    # A row's decisions in a tree are one 64-bit mask (see _explain_rows).
    return all(walk(tree, frozenset()) and internal(tree) <= 64 for tree in trees)


def _predictable(trees: list[dict]) -> bool:
    """Numerical splits and constant (not linear) leaves only, at most MAX_LEAVES leaves
    per tree."""
    def numerical(node: dict) -> bool:
        if "split_index" not in node:
            return "leaf_coeff" not in node
        return (node.get("decision_type") == "<=" and numerical(node["left_child"])
                and numerical(node["right_child"]))

    def leaves(node: dict) -> int:
        if "split_index" not in node:
            return 1
        return leaves(node["left_child"]) + leaves(node["right_child"])

    return all(numerical(tree) and leaves(tree) <= MAX_LEAVES for tree in trees)


def _split_rule(node: dict) -> tuple[float, bool, bool, bool]:
    """LightGBM's NumericalDecision for one split, folded into (threshold, nan_right,
    zero_missing, zero_right): a value goes right when ``value > threshold``, except NaN,
    which goes right when ``nan_right`` (missing type NaN or Zero: the default direction;
    None: NaN is read as 0), and, with missing type Zero, values in
    [-kZeroThreshold, kZeroThreshold], which go right when ``zero_right``."""
    missing = _MISSING[node["missing_type"]]
    default_right = not node["default_left"]
    threshold = float(node["threshold"])
    nan_right = (0.0 > threshold) if missing == _MISSING["None"] else default_right
    return threshold, nan_right, missing == _MISSING["Zero"], default_right


def _split_arrays(rules: list[tuple[float, bool, bool, bool]]) -> dict[str, np.ndarray]:
    threshold, nan_right, zero_missing, zero_right = zip(*rules) if rules else ((), (), (), ())
    return {"threshold": np.asarray(threshold, dtype=np.float64),
            "nan_right": np.asarray(nan_right, dtype=np.bool_),
            "zero_missing": np.asarray(zero_missing, dtype=np.bool_),
            "zero_right": np.asarray(zero_right, dtype=np.bool_)}


def _build_forest(trees: list[dict]) -> dict[str, np.ndarray]:
    """Splits numbered tree by tree in visit order (left subtree first), leaves left to
    right; ``keep[k]``: the tree's leaves a row can still reach once it goes right at split
    k (all but those of k's left subtree), bit j for the tree's j-th leaf."""
    feature: list[int] = []
    rules: list[tuple[float, bool, bool, bool]] = []
    keep: list[int] = []
    leaf_value: list[float] = []
    tree_nodes, tree_leaves = [0], [0]
    everything = (1 << 64) - 1
    for tree in trees:
        first_leaf = len(leaf_value)

        def visit(node: dict) -> int:
            """Mask of the leaves under ``node``."""
            if "split_index" not in node:
                leaf_value.append(node["leaf_value"])
                return 1 << (len(leaf_value) - 1 - first_leaf)
            k = len(feature)
            feature.append(node["split_feature"])
            rules.append(_split_rule(node))
            keep.append(everything)
            left = visit(node["left_child"])
            keep[k] = everything & ~left
            return left | visit(node["right_child"])

        visit(tree)
        tree_nodes.append(len(feature))
        tree_leaves.append(len(leaf_value))
    return {"tree_nodes": np.asarray(tree_nodes, dtype=np.int64),
            "tree_leaves": np.asarray(tree_leaves, dtype=np.int64),
            "feature": np.asarray(feature, dtype=np.int64), **_split_arrays(rules),
            "keep": np.asarray(keep, dtype=np.uint64),
            "leaf_value": np.asarray(leaf_value, dtype=np.float64)}


def _build_tables(trees: list[dict]) -> dict[str, np.ndarray]:
    """Flatten the trees and compute every leaf's contribution table."""
    feature: list[int] = []
    rules: list[tuple[float, bool, bool, bool]] = []
    tree_nodes, tree_leaves = [0], [0]
    leaf_right: list[int] = []  # per leaf: mask of its path's nodes it leaves to the right
    slot_mask: list[int] = []  # per (leaf, slot): mask of the path's nodes splitting on it
    leaf_d, slot_start, slot_feature, slot_zero, leaf_value = [], [0], [], [], []
    bias = 0.0
    for tree in trees:
        node_base = len(feature)
        leaves: list[tuple[float, int, list[tuple[int, int, int]]]] = []

        def visit(node: dict, path: list[tuple[int, int, int, float]]) -> int:
            """Number the internal nodes in visit order; collect each leaf's path."""
            if "split_index" not in node:  # a leaf (a one-leaf tree has no count)
                leaves.append((node["leaf_value"], node.get("leaf_count", 0), path))
                return node.get("leaf_count", 0)
            index = len(feature) - node_base
            feature.append(node["split_feature"])
            rules.append(_split_rule(node))
            count = node["internal_count"]
            for right, child in ((0, node["left_child"]), (1, node["right_child"])):
                child_count = child["internal_count"] if "split_index" in child else child["leaf_count"]
                visit(child, [*path, (index, right, node["split_feature"], child_count / count)])
            return count

        total = visit(tree, [])
        for value, count, path in leaves:
            bias += value * count / total if total else value
            slots: dict[int, int] = {}
            zero: list[float] = []
            masks: list[int] = []
            right_mask = 0
            for node, right, feat, fraction in path:
                if feat not in slots:
                    slots[feat] = len(zero)
                    zero.append(1.0)
                    masks.append(0)
                zero[slots[feat]] *= fraction
                masks[slots[feat]] |= 1 << node
                right_mask |= right << node
            leaf_right.append(right_mask)
            slot_mask.extend(masks)
            leaf_d.append(len(zero))
            slot_feature.extend(slots)  # dict order = slot order
            slot_zero.extend(zero)
            slot_start.append(len(slot_feature))
            leaf_value.append(value)
        tree_nodes.append(len(feature))
        tree_leaves.append(len(leaf_d))
    leaf_d_arr = np.asarray(leaf_d, dtype=np.int64)
    sizes = (2 ** leaf_d_arr) * leaf_d_arr
    table_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    slot_start_arr = np.asarray(slot_start, dtype=np.int64)
    table = np.zeros(int(table_start[-1]))
    _fill_tables(leaf_d_arr, slot_start_arr, np.asarray(slot_zero, dtype=np.float64),
                 np.asarray(leaf_value, dtype=np.float64), table_start, table)
    return {"bias": bias,
            "tree_nodes": np.asarray(tree_nodes, dtype=np.int64),
            "tree_leaves": np.asarray(tree_leaves, dtype=np.int64),
            "feature": np.asarray(feature, dtype=np.int64), **_split_arrays(rules),
            "leaf_right": np.asarray(leaf_right, dtype=np.uint64),
            "slot_mask": np.asarray(slot_mask, dtype=np.uint64),
            "leaf_d": leaf_d_arr, "slot_start": slot_start_arr,
            "slot_feature": np.asarray(slot_feature, dtype=np.int64),
            "table_start": table_start, "table": table}


@_jit()
def _fill_tables(leaf_d, slot_start, slot_zero, leaf_value, table_start, table):
    """table[leaf][pattern * d + s]: the leaf's contribution to its path feature s when the
    row meets the conditions of the features whose bits are set in ``pattern``.

    The unique path is built with TreeSHAP's EXTEND (a root element of fractions 1, then one
    element per feature: zero fraction = product of the path's cover ratios for it, one
    fraction = the bit) and each feature's weight with UNWOUND-PATH-SUM (Lundberg et al.,
    2018, Algorithm 2), exactly the quantities LightGBM's recursion reaches at the leaf.
    """
    max_d = 0
    for g in range(leaf_d.size):
        max_d = max(max_d, leaf_d[g])
    zero = np.empty(max_d + 1)
    one = np.empty(max_d + 1)
    weight = np.empty(max_d + 1)
    for g in range(leaf_d.size):
        d = leaf_d[g]
        for pattern in range(1 << d):
            zero[0] = 1.0
            one[0] = 1.0
            weight[0] = 1.0
            for s in range(d):  # EXTEND with element s + 1
                depth = s + 1
                z = slot_zero[slot_start[g] + s]
                o = 1.0 if (pattern >> s) & 1 else 0.0
                zero[depth] = z
                one[depth] = o
                weight[depth] = 0.0
                for i in range(depth - 1, -1, -1):
                    weight[i + 1] += o * weight[i] * (i + 1) / (depth + 1)
                    weight[i] = z * weight[i] * (depth - i) / (depth + 1)
            base = table_start[g] + pattern * d
            for s in range(d):  # UNWOUND-PATH-SUM for element s + 1
                o = one[s + 1]
                z = zero[s + 1]
                total = 0.0
                if o != 0.0:
                    next_one = weight[d]
                    for i in range(d - 1, -1, -1):
                        tmp = next_one / ((i + 1) * o)
                        total += tmp
                        next_one = weight[i] - tmp * z * (d - i)
                else:
                    for i in range(d - 1, -1, -1):
                        total += weight[i] / (z * (d - i))
                table[base + s] = total * (d + 1) * (o - z) * leaf_value[g]


@_jit(inline="always")
def _goes_right(value, threshold, nan_right):
    """LightGBM's NumericalDecision at a split of missing type None or NaN (see
    :func:`_split_rule`), branch-free so that a loop over rows vectorises."""
    return (value > threshold) | (np.isnan(value) & nan_right)


@_jit(inline="always")
def _goes_right_zero_missing(value, threshold, zero_right):
    """NumericalDecision at a split of missing type Zero (NaN is read as 0)."""
    compared = value > threshold
    zero = np.isnan(value) | (np.abs(value) <= _ZERO)
    return compared ^ (zero & (compared ^ zero_right))


@_jit(nogil=True)
def _predict_rows(columns, start, stop, sigmoid, out, tree_nodes, tree_leaves, feature, threshold,
                  nan_right, zero_missing, zero_right, keep, leaf_value):
    """out[r] = probability of rows start..stop-1 (columns: (n_features, n)).

    Tree-major over blocks of rows; a row's exit leaf is the first leaf left reachable
    after removing, at each split it goes right at, the leaves of the split's left subtree
    (QuickScorer).
    """
    block = max(1, min(ROW_BLOCK, stop - start))
    reachable = np.empty(block, dtype=np.uint64)
    raw = np.empty(block)
    everything = ~np.uint64(0)
    for block_start in range(start, stop, block):
        m = min(stop, block_start + block) - block_start
        raw[:m] = 0.0
        for t in range(tree_nodes.size - 1):
            reachable[:m] = everything
            for k in range(tree_nodes[t], tree_nodes[t + 1]):
                # A slice from 0: indices known non-negative, so the loop vectorises.
                values = columns[feature[k], block_start:block_start + m]
                split_threshold, kept = threshold[k], keep[k]
                if zero_missing[k]:
                    split_zero_right = zero_right[k]
                    for i in range(m):
                        right = _goes_right_zero_missing(values[i], split_threshold, split_zero_right)
                        reachable[i] &= kept if right else everything
                else:
                    split_nan_right = nan_right[k]
                    for i in range(m):
                        right = _goes_right(values[i], split_threshold, split_nan_right)
                        reachable[i] &= kept if right else everything
            first_leaf = tree_leaves[t]
            for i in range(m):
                raw[i] += leaf_value[first_leaf + np.int64(trailing_zeros(reachable[i]))]
        for i in range(m):  # LightGBM's BinaryLogloss::ConvertOutput
            out[block_start + i] = 1.0 / (1.0 + math.exp(-sigmoid * raw[i]))


@_jit(nogil=True)
def _explain_rows(columns, start, stop, out, tree_nodes, tree_leaves, feature, threshold,
                  nan_right, zero_missing, zero_right, leaf_right, slot_mask, leaf_d, slot_start,
                  slot_feature, table_start, table):
    """out[r, :n_features] = every tree's contributions for rows start..stop-1 (columns:
    (n_features, n)), added in tree, leaf, slot order.

    A row's decisions in a tree are one mask (bit k: it goes right at the tree's k-th
    split); a leaf's path condition on its feature s holds when the row agrees with the
    leaf's directions on every split of ``slot_mask`` s.  Tree-major over blocks of rows,
    leaf by leaf for the whole block: a leaf's masks and table are read once per block, and
    the additions of different rows to one feature do not wait on each other.
    """
    n_features = columns.shape[0]
    block = max(1, min(ROW_BLOCK, stop - start))
    goes_right = np.empty(block, dtype=np.uint64)
    pattern = np.empty(block, dtype=np.int64)
    total = np.empty((n_features, block))  # feature-major: a slot adds to one row of it
    zero_mask = np.uint64(0)
    for block_start in range(start, stop, block):
        m = min(stop, block_start + block) - block_start
        total[:, :m] = 0.0
        for t in range(tree_nodes.size - 1):
            first = tree_nodes[t]
            goes_right[:m] = zero_mask
            for k in range(first, tree_nodes[t + 1]):
                split_threshold, bit = threshold[k], np.uint64(k - first)
                # A slice from 0: indices known non-negative, so the loop vectorises.
                values = columns[feature[k], block_start:block_start + m]
                if zero_missing[k]:
                    split_zero_right = zero_right[k]
                    for i in range(m):
                        right = _goes_right_zero_missing(values[i], split_threshold, split_zero_right)
                        goes_right[i] |= np.uint64(right) << bit
                else:
                    split_nan_right = nan_right[k]
                    for i in range(m):
                        right = _goes_right(values[i], split_threshold, split_nan_right)
                        goes_right[i] |= np.uint64(right) << bit
            for g in range(tree_leaves[t], tree_leaves[t + 1]):
                d = leaf_d[g]
                directions = leaf_right[g]
                first_slot = slot_start[g]
                pattern[:m] = 0
                for s in range(d):
                    mask = slot_mask[first_slot + s]
                    for i in range(m):
                        pattern[i] |= np.int64((goes_right[i] ^ directions) & mask == zero_mask) << s
                for s in range(d):
                    slot_total = total[slot_feature[first_slot + s]]
                    values = table[table_start[g] + s:]
                    for i in range(m):
                        slot_total[i] += values[pattern[i] * d]
        for i in range(m):
            for f in range(n_features):
                out[block_start + i, f] = total[f, i]


@_jit(nogil=True)
def _explain_few_rows(columns, start, stop, out, tree_nodes, tree_leaves, feature, threshold,
                      nan_right, zero_missing, zero_right, leaf_right, slot_mask, leaf_d,
                      slot_start, slot_feature, table_start, table):
    """:func:`_explain_rows` row by row, for fewer than :data:`VECTOR_ROWS` rows (REST calls),
    where setting up a vector loop per split and slot costs more than the loop."""
    n_features = columns.shape[0]
    out[start:stop, :n_features] = 0.0
    zero_mask = np.uint64(0)
    for t in range(tree_nodes.size - 1):
        first = tree_nodes[t]
        for r in range(start, stop):
            goes_right = zero_mask
            for k in range(first, tree_nodes[t + 1]):
                value = columns[feature[k], r]
                if zero_missing[k]:
                    right = _goes_right_zero_missing(value, threshold[k], zero_right[k])
                else:
                    right = _goes_right(value, threshold[k], nan_right[k])
                goes_right |= np.uint64(right) << np.uint64(k - first)
            for g in range(tree_leaves[t], tree_leaves[t + 1]):
                d = leaf_d[g]
                off_path = goes_right ^ leaf_right[g]
                pattern = 0
                for s in range(d):
                    if off_path & slot_mask[slot_start[g] + s] == zero_mask:
                        pattern |= 1 << s
                for s in range(d):
                    out[r, slot_feature[slot_start[g] + s]] += table[table_start[g] + pattern * d + s]
