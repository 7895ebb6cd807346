import numpy as np
import polars as pl
import pytest

from medfraud.graph import GraphFormatError, load_generic_graph, make_fraudar_benchmark


def _write(folder, nodes: pl.DataFrame, edges: pl.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    nodes.write_parquet(folder / "nodes.parquet")
    edges.write_parquet(folder / "edges.parquet")
    return folder


NODES = pl.DataFrame({"node_id": ["a", "b", "x", "y"], "node_type": ["u", "u", "i", "i"],
                      "f_0": [1.0, 3.0, 0.0, 2.0],
                      "label": pl.Series([1, 0, None, 0], dtype=pl.Int8)})
EDGES = pl.DataFrame({"src": ["a", "a", "a", "b"], "dst": ["x", "x", "y", "y"],
                      "relation": ["rates"] * 4})


def test_load_generic_graph(tmp_path):
    g = load_generic_graph(_write(tmp_path / "g", NODES, EDGES))
    assert g.node_types == ["i", "u"]
    assert g.node_ids["u"].to_list() == ["a", "b"]
    ei = g.data["u", "rates", "i"].edge_index.numpy()
    attrs = g.data["u", "rates", "i"].edge_attr.numpy()
    assert ei.tolist() == [[0, 0, 1], [0, 1, 1]]
    assert attrs[:, 0].tolist() == [2.0, 1.0, 1.0]  # the duplicate a->x row becomes count 2
    assert ("i", "rev_rates", "u") in g.edge_types
    assert g.feature_names["u"] == ["f_0", "log_count_rates"]
    np.testing.assert_allclose(g.data["u"].x[:, 0].numpy(), [-1.0, 1.0])
    assert g.labels["u"].to_list() == [1, 0] and g.labels["i"].to_list() == [None, 0]


@pytest.mark.parametrize("nodes, edges, message", [
    (NODES.drop("node_type"), EDGES, r"nodes.parquet: missing column 'node_type'"),
    (NODES, EDGES.drop("relation"), r"edges.parquet: missing column 'relation'"),
    (pl.concat([NODES, NODES.head(1)]), EDGES, r"nodes.parquet.node_id: 2 row\(s\) with a duplicate"),
    (NODES, pl.concat([EDGES, pl.DataFrame({"src": ["zz"], "dst": ["x"], "relation": ["rates"]})]),
     r"edges.parquet.src: 1 edge\(s\) point to a node absent .*zz"),
    (NODES.with_columns(pl.Series("label", [2, 0, 0, 0], dtype=pl.Int8)), EDGES,
     r"nodes.parquet.label: 1 value\(s\) not 0/1/null"),
    (NODES.with_columns(pl.lit("t").alias("f_bad")), EDGES, r"nodes.parquet.f_bad: feature columns"),
    (NODES, EDGES.with_columns(pl.when(pl.col("src") == "b").then(None).otherwise(pl.col("dst"))
                               .alias("dst")), r"edges.parquet.dst: 1 null value"),
])
def test_validation_errors_name_file_column_count(tmp_path, nodes, edges, message):
    with pytest.raises(GraphFormatError, match=message):
        load_generic_graph(_write(tmp_path / "bad", nodes, edges))


def test_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GraphFormatError, match="nodes.parquet is missing"):
        load_generic_graph(tmp_path / "empty")


def test_fraudar_benchmark_generator(tmp_path):
    a = make_fraudar_benchmark(400, 300, block=(20, 15), n_blocks=2, camouflage_ratio=1.0,
                               seed=3, out=tmp_path / "a", block_density=0.6)
    b = make_fraudar_benchmark(400, 300, block=(20, 15), n_blocks=2, camouflage_ratio=1.0,
                               seed=3, out=tmp_path / "b", block_density=0.6)
    for name in ("nodes.parquet", "edges.parquet"):
        assert pl.read_parquet(a / name).equals(pl.read_parquet(b / name))
    nodes = pl.read_parquet(a / "nodes.parquet")
    edges = pl.read_parquet(a / "edges.parquet")
    assert nodes.height == 700 and edges.select("src", "dst").is_duplicated().sum() == 0
    rings = nodes.filter(pl.col("ring_id").is_not_null()).group_by("ring_id", "node_type").len()
    assert rings.height == 4 and set(rings["len"].to_list()) == {20, 15}
    assert nodes["label"].sum() == 70
    g = load_generic_graph(a)
    assert set(g.meta["rings"]) == {"ring0", "ring1"}
    # fraud users carry their block edges plus about as many camouflage edges
    fraud_users = nodes.filter((pl.col("node_type") == "user") & (pl.col("label") == 1))["node_id"]
    fraud_edges = edges.join(nodes.select(pl.col("node_id").alias("dst"), "ring_id"), on="dst")
    per_user = fraud_edges.filter(pl.col("src").is_in(fraud_users.implode()))
    in_block = per_user.filter(pl.col("ring_id").is_not_null()).height
    camouflage = per_user.filter(pl.col("ring_id").is_null()).height
    assert in_block > 0.5 * 0.6 * 2 * 20 * 15
    assert camouflage >= 0.9 * in_block
    with pytest.raises(ValueError, match="do not fit"):
        make_fraudar_benchmark(10, 10, block=(6, 6), n_blocks=2, out=tmp_path / "c")
