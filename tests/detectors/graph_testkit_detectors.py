"""A small generic graph with planted fraud for the graph-detector tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from medfraud.features.frameset import FeatureSet
from medfraud.graph import load_generic_graph, make_fraudar_benchmark


def planted_graph(out: Path, seed: int = 0) -> FeatureSet:
    """800 users x 400 items, two 15x15 fraud blocks with camouflage; fraud users also
    carry shifted f_0/f_1 (attribute anomalies, for the unsupervised DOMINANT)."""
    path = make_fraudar_benchmark(800, 400, block=(15, 15), n_blocks=2, camouflage_ratio=1.0,
                                  seed=seed, out=out, block_density=0.5)
    nodes = pl.read_parquet(path / "nodes.parquet")
    shift = (pl.col("label") == 1) & (pl.col("node_type") == "user")
    nodes = nodes.with_columns(
        pl.when(shift).then(pl.col("f_0") + 4.0).otherwise(pl.col("f_0")).alias("f_0"),
        pl.when(shift).then(pl.col("f_1") - 4.0).otherwise(pl.col("f_1")).alias("f_1"))
    nodes.write_parquet(path / "nodes.parquet")
    return FeatureSet(frames={}, columns={}, graph=load_generic_graph(path))
