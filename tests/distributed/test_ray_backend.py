"""The Ray backend: an experiment's sweep points as Ray tasks on a local cluster give the
same metrics and the same MLflow run tree as one process."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    from medfraud.distributed import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def _sweep(dataset_path: Path, uri: str, experiment: str):
    from medfraud.config import load_experiment

    return load_experiment(REPO / "experiments/quickstart.yaml", [
        "dataset.preset=tiny", f"dataset.path={dataset_path}", f"tracking.uri={uri}",
        f"tracking.experiment={experiment}", "features.levels=[claim, doctor]",
        "detectors={rules: {family: rules}, lightgbm: {family: lightgbm, level: claim, "
        "params: {n_estimators: 40, num_threads: 1}}}",
        "sweep={detectors.rules.params.base: [0.5, 2.0]}"])


def _children(uri: str, parent_run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return parent, {r.info.run_name: r for r in runs}


def test_sweep_points_as_ray_tasks_match_one_process(local_ray, tiny_dataset_path, tmp_path,
                                                     monkeypatch):
    from medfraud.experiment import run_experiment

    # Relative, as the default sqlite:///mlflow.db is: the workers must still find it.
    monkeypatch.chdir(tmp_path)
    results, trees = {}, {}
    for backend in ("local", "ray"):
        uri = f"sqlite:///{backend}.db"
        steps = []
        results[backend] = run_experiment(
            _sweep(tiny_dataset_path, uri, "sweep"), backend=backend,
            progress=lambda msg, done, total: steps.append((done, total)))
        assert steps[-1] == (2 * 6, 2 * 6)  # 4 steps + 2 detectors, per point
        trees[backend] = _children(uri, results[backend].parent_run_id)
    local, distributed = results["local"], results["ray"]
    order = ["point", "detector", "level", "typology"]
    assert_frame_equal(local.metrics.sort(order), distributed.metrics.sort(order))
    assert set(local.child_run_ids) == set(distributed.child_run_ids) == {
        "rules[base=0.5]", "rules[base=2.0]", "lightgbm[base=0.5]", "lightgbm[base=2.0]"}
    (_, local_runs), (ray_parent, ray_runs) = trees["local"], trees["ray"]
    assert ray_parent.info.status == "FINISHED"
    assert set(ray_runs) == set(local_runs) == set(distributed.child_run_ids)
    for name, run in ray_runs.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_id == distributed.child_run_ids[name]
        assert run.data.metrics == local_runs[name].data.metrics
        assert run.data.params == local_runs[name].data.params


def test_a_failing_point_fails_the_run_with_the_tasks_exception(local_ray, tiny_dataset_path,
                                                                tmp_path):
    from mlflow.tracking import MlflowClient

    from medfraud.experiment import run_experiment

    uri = f"sqlite:///{tmp_path / 'fail.db'}"
    config = _sweep(tiny_dataset_path, uri, "failing")
    # A LightGBM parameter it rejects at fit time, in a worker.
    config.detectors["lightgbm"].params["lgb_params"] = {"num_leaves": -3}
    from lightgbm.basic import LightGBMError

    # Raised as the worker raised it (callers catch DataError, LightGBMError... as usual).
    with pytest.raises(LightGBMError, match="num_leaves"):
        run_experiment(config, backend="ray")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    parent = [r for r in runs if r.data.tags.get("medfraud.kind") == "experiment"]
    assert [r.info.status for r in parent] == ["FAILED"]


def test_unknown_backend_is_refused(tmp_path):
    from typer.testing import CliRunner

    from medfraud.cli import app
    from medfraud.experiment import run_experiment

    with pytest.raises(ValueError, match="backend must be one of"):
        run_experiment(_sweep(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", "x"), backend="spark")
    out = CliRunner().invoke(app, ["run", str(REPO / "experiments/quickstart.yaml"),
                                   "--backend", "spark"], env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in out.output


def test_generation_on_ray_writes_the_same_bytes(local_ray, tiny_dataset, tmp_path):
    """Shards simulated by Ray tasks and written here in shard order give the local
    dataset: same digest, same tables, same part files."""
    import data_synth
    from typer.testing import CliRunner

    from medfraud.cli import app
    from medfraud.dataset import Dataset
    from medfraud.schema import TABLES

    config = data_synth.load_config("tiny", seed=tiny_dataset.manifest["seed"],
                                    overrides=["shard_claims=2000"])  # several shards
    local = Dataset(data_synth.generate(config, tmp_path / "local"))
    done = []
    distributed = Dataset(data_synth.generate(config, tmp_path / "ray", backend="ray",
                                              progress=lambda d, t: done.append((d, t))))
    assert local.manifest["shards"] > 2 and done[-1] == (local.manifest["shards"] + 1,) * 2
    assert distributed.digest == local.digest
    for table in TABLES:
        local_parts = sorted(p.name for p in (local.path / table).glob("*.parquet"))
        assert sorted(p.name for p in (distributed.path / table).glob("*.parquet")) == local_parts
        assert_frame_equal(distributed.read(table), local.read(table))
    out = CliRunner().invoke(app, ["generate", "--preset", "tiny", "--out", str(tmp_path / "cli"),
                                   "--backend", "ray", "--seed", str(tiny_dataset.manifest["seed"])])
    assert out.exit_code == 0, out.output
    assert Dataset(tmp_path / "cli").digest == tiny_dataset.digest


def test_batch_scoring_on_ray_writes_the_same_scores_and_rejects(local_ray, pipeline, exported,
                                                                 tmp_path):
    """Chunks checked here and scored by Ray tasks: the output and the rejects are those of
    one process, bad rows, a non-contiguous claim and chunk boundaries included."""
    from medfraud.export.inputs import rows_from_frames
    from medfraud.serve.batch import score_file
    from tests.export.factory import holdout_frames

    rows = rows_from_frames(*holdout_frames(exported["dataset"]))
    first = rows["claim_id"][0]
    rows = pl.concat([  # a bad quantity, and the first claim's rows again at the end
        rows.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(-1.0)
                          .otherwise(pl.col("quantity")).alias("quantity")),
        rows.filter(pl.col("claim_id") == first).with_columns(
            (pl.col("line_no") + 100).cast(pl.Int32))])
    src = tmp_path / "in.parquet"
    rows.write_parquet(src, row_group_size=120)
    reports = {}
    for backend in ("local", "ray"):
        reports[backend] = score_file(pipeline, src, tmp_path / f"{backend}.parquet",
                                      chunk_size=250, max_bad_share=0.2, backend=backend)
    local, distributed = reports["local"], reports["ray"]
    assert (distributed.rows, distributed.claims, distributed.bad_rows) == \
        (local.rows, local.claims, local.bad_rows)
    assert local.bad_rows >= 2 and rows.height > 3 * 250  # several chunks in flight
    assert_frame_equal(pl.read_parquet(tmp_path / "ray.parquet"),
                       pl.read_parquet(tmp_path / "local.parquet"))
    assert_frame_equal(pl.read_csv(tmp_path / "ray.parquet.rejects.csv"),
                       pl.read_csv(tmp_path / "local.parquet.rejects.csv"))
    from typer.testing import CliRunner

    from medfraud.cli import app

    out = CliRunner().invoke(app, ["score", "--model", str(exported["model_dir"]), "--input",
                                   str(src), "--output", str(tmp_path / "cli.parquet"),
                                   "--chunk-size", "250", "--max-bad-share", "0.2",
                                   "--backend", "ray"])
    assert out.exit_code == 0, out.output
    assert_frame_equal(pl.read_parquet(tmp_path / "cli.parquet"),
                       pl.read_parquet(tmp_path / "local.parquet"))
