"""Print the README's results tables from the latest run of an experiment in MLflow.

    .venv/bin/python scripts/results_table.py quickstart [--metric auprc] [--uri sqlite:///mlflow.db]

One row per typology at the level it is judged at (plus ``all`` per level), one column per
detector (and sweep point); values from the parent run's ``metrics/metrics_table.parquet``.
"""

from __future__ import annotations

import argparse
import tempfile

import mlflow
import polars as pl

from medfraud.labels import TYPOLOGY_LEVEL


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    parser.add_argument("--metric", default="auprc")
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    client = mlflow.MlflowClient(args.uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.uri}")
    runs = client.search_runs([experiment.experiment_id],
                              "tags.`medfraud.kind` = 'experiment' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"no finished run of {args.experiment!r}")
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, tracking_uri=args.uri,
                                                   artifact_path="metrics/metrics_table.parquet", dst_path=tmp)
        table = pl.read_parquet(path)
    wanted = pl.DataFrame({"typology": list(TYPOLOGY_LEVEL), "level": list(TYPOLOGY_LEVEL.values())})
    rows = table.join(wanted, on=["typology", "level"], how="semi")
    rows = rows.with_columns(
        (pl.col("detector") + pl.when(pl.col("point") != "").then(" [" + pl.col("point") + "]").otherwise(pl.lit("")))
        .alias("column"),
        (pl.col("level") + "." + pl.col("typology")).alias("typology at level"),
        pl.col(args.metric).round(3))
    wide = rows.pivot(on="column", index="typology at level", values=args.metric,
                      aggregate_function="first", maintain_order=True)
    header = "| " + " | ".join(wide.columns) + " |"
    print(f"run {runs[0].info.run_id}, metric {args.metric}\n")
    print(header)
    print("|" + "---|" * len(wide.columns))
    for row in wide.iter_rows():
        print("| " + " | ".join("–" if v is None or v != v else str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
