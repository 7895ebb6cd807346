"""Benchmark: the audit-rule engine (alone, and together with build_features) on N claims.

Run::

    .venv/bin/python tests/benchmarks/bench_rules.py --claims 5000000 10000000

Synthetic data comes from :mod:`_synth` (contract-valid, realistic cardinalities); each case
runs in a fresh interpreter limited to ``--threads`` cores and is measured with
:func:`_measure.measure` (wall seconds, peak RSS).  Results are merged into
tests/benchmarks/results/rules.json and rules.md with ``bench_features.record``.
Targets: features + rules on 10M claims in <= 30 s, peak RSS <= 4 GiB, and doubling the
claims costs <= 2.2x the time.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def run_rules(path: str) -> None:
    """The measured call: every enabled rule of the default catalogue over the whole dataset."""
    from medfraud.dataset import Dataset
    from medfraud.rules import evaluate_rules

    hits = evaluate_rules(Dataset(path))
    assert hits.height >= 0


def run_features_and_rules(path: str) -> None:
    """Features at every level, then the rules, over one split by patient: what an
    experiment computes per window (``medfraud.experiment.build_window_features``)."""
    from medfraud.dataset import Dataset
    from medfraud.features import build_features
    from medfraud.partitions import split_by_patient
    from medfraud.rules import evaluate_rules

    dataset = Dataset(path)
    with split_by_patient(dataset) as partitions:
        features = build_features(dataset, partitions=partitions)
        features.rule_hits = evaluate_rules(dataset, partitions=partitions)


def run_line_join_floor(path: str) -> None:
    """A floor of the work, not a target: every line joined with its claim's patient and
    date (the join any line-level feature or rule starts from), over the narrowest columns,
    collected.  A claim's lines reach its patient's features and rules through this join."""
    import polars as pl

    claims = pl.scan_parquet(f"{path}/claims/*.parquet").select("claim_id", "patient_id",
                                                                 "service_date")
    lines = pl.scan_parquet(f"{path}/claim_lines/*.parquet").select("claim_id", "item_code",
                                                                     "quantity")
    assert lines.join(claims, on="claim_id", how="inner").collect().height > 0


def run_patient_sort_floor(path: str) -> None:
    """A floor of the work, not a target: the claims ordered by patient and date (the order
    refill gaps, readmissions and a card's days are judged in), over the narrowest columns."""
    import polars as pl

    claims = pl.scan_parquet(f"{path}/claims/*.parquet").select("claim_id", "patient_id",
                                                                 "service_date")
    assert claims.sort("patient_id", "service_date").collect().height > 0


CASES = {"rules": ("bench_rules", "run_rules"),
         "features_and_rules": ("bench_rules", "run_features_and_rules"),
         # The floor the targets are judged against: one polars group_by over the claims.
         "groupby_floor": ("bench_features", "run_groupby_floor"),
         # Two steps no implementation of the features can skip, to size the target against.
         "line_join_floor": ("bench_rules", "run_line_join_floor"),
         "patient_sort_floor": ("bench_rules", "run_patient_sort_floor")}


def main(argv: list[str] | None = None) -> None:
    from bench_features import run_cases

    run_cases("rules", CASES, "/tmp/medfraud_bench", argv)


if __name__ == "__main__":
    main()
