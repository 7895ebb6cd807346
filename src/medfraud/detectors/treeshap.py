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
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numba
import numpy as np

MAX_PATH_FEATURES = 10  # table of 2^d × d values per leaf
ROWS_PER_THREAD = 256  # a thread is started per this many rows at least (REST calls: one)
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
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be (n, {self.n_features}), got {X.shape}")
        if not self.fast:
            return self.booster.predict(X, pred_contrib=True, num_threads=self.num_threads)
        t = self._tables
        out = np.zeros((X.shape[0], self.n_features + 1))
        out[:, -1] = t["bias"]
        threads = max(1, min(self.num_threads, X.shape[0] // ROWS_PER_THREAD))
        blocks = np.array_split(np.arange(X.shape[0]), threads)

        def run(rows: np.ndarray) -> None:
            if rows.size:
                _explain_rows(X, rows[0], rows[-1] + 1, out, t["tree_nodes"], t["tree_leaves"],
                              t["feature"], t["threshold"], t["default_left"], t["missing"],
                              t["leaf_right"], t["slot_mask"], t["leaf_d"], t["slot_start"],
                              t["slot_feature"], t["table_start"], t["table"])

        if len(blocks) == 1:
            run(blocks[0])
        else:
            with ThreadPoolExecutor(len(blocks)) as pool:  # the kernel releases the GIL
                list(pool.map(run, blocks))
        return out


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


def _build_tables(trees: list[dict]) -> dict[str, np.ndarray]:
    """Flatten the trees and compute every leaf's contribution table."""
    feature, threshold, default_left, missing = [], [], [], []
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
            threshold.append(node["threshold"])
            default_left.append(bool(node["default_left"]))
            missing.append(_MISSING[node["missing_type"]])
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
            "feature": np.asarray(feature, dtype=np.int64),
            "threshold": np.asarray(threshold, dtype=np.float64),
            "default_left": np.asarray(default_left, dtype=np.bool_),
            "missing": np.asarray(missing, dtype=np.int8),
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


@_jit(nogil=True)
def _explain_rows(X, start, stop, out, tree_nodes, tree_leaves, feature, threshold, default_left,
                  missing, leaf_right, slot_mask, leaf_d, slot_start, slot_feature, table_start,
                  table):
    """Add every tree's contributions to ``out`` for rows start..stop-1.

    A row's decisions in a tree are one mask (bit k: it goes right at the tree's k-th
    split); a leaf's path condition on its feature s holds when the row agrees with the
    leaf's directions on every split of ``slot_mask`` s.
    """
    zero_mask = np.uint64(0)
    one = np.uint64(1)
    # Tree-major: one tree's tables stay in cache while every row goes through it.
    for t in range(tree_nodes.size - 1):
        first = tree_nodes[t]
        for r in range(start, stop):
            goes_right = zero_mask
            for k in range(first, tree_nodes[t + 1]):  # LightGBM's NumericalDecision
                value = X[r, feature[k]]
                if np.isnan(value) and missing[k] != 2:
                    value = 0.0
                if (missing[k] == 1 and -_ZERO <= value <= _ZERO) or (missing[k] == 2 and np.isnan(value)):
                    right = not default_left[k]
                else:
                    right = not value <= threshold[k]
                if right:
                    goes_right |= one << np.uint64(k - first)
            for g in range(tree_leaves[t], tree_leaves[t + 1]):
                d = leaf_d[g]
                off_path = goes_right ^ leaf_right[g]
                pattern = 0
                for s in range(d):
                    if off_path & slot_mask[slot_start[g] + s] == zero_mask:
                        pattern |= 1 << s
                base = table_start[g] + pattern * d
                for s in range(d):
                    out[r, slot_feature[slot_start[g] + s]] += table[base + s]
