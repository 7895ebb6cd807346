"""The graph-build and GraphSAGE-epoch cases of ``bench_graph.py``, run in fresh processes.

``measure_in_subprocess`` imports this module before it starts the clock, so the torch /
PyG import (3-5 s of CPU, paid once per interpreter) is not counted as graph build time;
``bench_graph.run_build`` keeps the cold figure, imports included, for comparison.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from _measure import measure
from medfraud.dataset import Dataset
from medfraud.graph import build_claims_graph
from medfraud.graph.models import HeteroSAGE


def run_build(path: str) -> None:
    """The measured call of the build case (imports already done)."""
    graph = build_claims_graph(Dataset(path))
    assert graph.num_nodes("patient") > 0


def sage_epochs(graph, n_epochs: int = 3) -> tuple[list[tuple[float, float]], float]:
    """Full-batch training epochs (forward, backward, Adam step) of heterogeneous GraphSAGE
    scoring doctors (hidden 32, 2 layers, dropout 0.2), after one warm-up epoch.

    Returns ((wall s, CPU s) per epoch, seconds to build the per-relation mean adjacencies).
    The adjacencies are built once per graph (``ClaimsGraph.mean_adjacency`` caches them),
    like the detector's training loop does, so they are timed apart from the epochs.
    """
    start = time.perf_counter()
    adjacency = {et: graph.mean_adjacency(et) for et in graph.edge_types}
    prepare_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = HeteroSAGE({t: graph.data[t].x.shape[1] for t in graph.node_types}, graph.edge_types,
                       "doctor", hidden=32, layers=2)
    x = {t: graph.data[t].x for t in graph.node_types}
    target = torch.zeros(graph.num_nodes("doctor"), dtype=torch.long)
    target[::50] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, foreach=True)
    times = []
    for epoch in range(n_epochs + 1):
        start, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, adjacency), target)
        loss.backward()
        optimizer.step()
        if epoch:
            times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times, prepare_s


def run_epochs(path: str, out_json: str, n_epochs: str = "5", threads: str = "2") -> None:
    """Build the graph, then time ``n_epochs`` epochs; writes epochs, peak RSS to ``out_json``.

    The peak is the high-water mark of the process during the epochs (graph included).
    """
    torch.set_num_threads(int(threads))
    graph = build_claims_graph(Dataset(path))
    result: dict = {}

    def epochs() -> None:
        result["epochs"], result["prepare_s"] = sage_epochs(graph, int(n_epochs))

    _, peak = measure(epochs)
    result |= {"peak_rss_bytes": peak, "threads": torch.get_num_threads(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
    Path(out_json).write_text(json.dumps(result))
