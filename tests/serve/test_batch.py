"""Batch scoring of Parquet/CSV files: streaming, rejects, failure threshold, CLI."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from medfraud.cli import app
from medfraud.export.inputs import InputError, rows_from_frames
from medfraud.serve.batch import TooManyBadRows, claim_chunks, score_file
from tests.export.factory import holdout_frames


@pytest.fixture(scope="module")
def rows(exported):
    claims, lines = holdout_frames(exported["dataset"])
    return rows_from_frames(claims, lines)


def test_parquet_in_chunks_scores_every_claim_once(pipeline, rows, tmp_path):
    src = tmp_path / "in.parquet"
    rows.write_parquet(src, row_group_size=100)
    seen = []
    report = score_file(pipeline, src, tmp_path / "out.parquet", chunk_size=150,
                        progress=lambda done, total: seen.append((done, total)))
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert report.rows == rows.height and report.bad_rows == 0 and report.rejects is None
    assert out.height == report.claims == rows["claim_id"].n_unique()
    assert out["claim_id"].n_unique() == out.height
    assert out.schema["reasons"] == pl.List(pl.String)
    assert seen[-1] == (rows.height, rows.height) and len(seen) > 3
    assert not (tmp_path / "out.parquet.rejects.csv").exists()


def test_one_chunk_equals_in_process_scores(pipeline, rows, tmp_path, exported):
    src = tmp_path / "in.parquet"
    rows.write_parquet(src)
    score_file(pipeline, src, tmp_path / "out.parquet", chunk_size=rows.height + 1)
    out = pl.read_parquet(tmp_path / "out.parquet")
    reference = pl.read_parquet(exported["in_process_scores"])
    assert out.join(reference, on="claim_id").select(
        (pl.col("risk") - pl.col("risk_right")).abs().max()).item() <= 1e-9


def test_claims_are_never_split_across_chunks():
    frame = pl.DataFrame({"claim_id": ["a", "a", "b", "b", "b", "c", "d", "d"], "x": range(8)})
    batches = [frame.slice(0, 3), frame.slice(3, 1), frame.slice(4, 3), frame.slice(7, 1)]
    chunks = list(claim_chunks(iter(batches)))
    assert [c["claim_id"].to_list() for _, c in chunks] == [["a", "a"], ["b", "b", "b", "c"], ["d", "d"]]
    assert [first for first, _ in chunks] == [1, 3, 7]


def test_csv_bad_rows_go_to_rejects_file(pipeline, rows, tmp_path):
    text = rows.with_columns(pl.col(c).cast(pl.String) for c in rows.columns)
    text = text.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("-3.5")).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.int_range(pl.len()) == 9).then(pl.lit("yesterday")).otherwise(pl.col("service_date"))
        .alias("service_date"))
    src = tmp_path / "in.csv"
    text.write_csv(src)
    report = score_file(pipeline, src, tmp_path / "out.csv", chunk_size=300, max_bad_share=0.05)
    rejects = pl.read_csv(tmp_path / "out.csv.rejects.csv")
    assert {(5, "amount"), (10, "service_date")} <= set(zip(rejects["row"], rejects["column"]))
    bad_claims = set(rejects["claim_id"])
    out = pl.read_csv(tmp_path / "out.csv")
    assert not bad_claims & set(out["claim_id"])
    # Nothing dropped silently: every input row is scored or reported.
    scored_rows = rows.filter(pl.col("claim_id").is_in(out["claim_id"].implode())).height
    assert scored_rows + rejects["row"].n_unique() == rows.height
    assert report.bad_rows == rejects["row"].n_unique()
    assert out.schema["reasons"] == pl.String


def test_too_many_bad_rows_fails_without_output(pipeline, rows, tmp_path):
    bad = rows.with_columns(pl.when(pl.int_range(pl.len()) % 10 == 0).then(-1.0)
                            .otherwise(pl.col("quantity")).alias("quantity"))
    src = tmp_path / "in.parquet"
    bad.write_parquet(src)
    with pytest.raises(TooManyBadRows, match="more than --max-bad-share"):
        score_file(pipeline, src, tmp_path / "out.parquet", max_bad_share=0.01)
    assert not (tmp_path / "out.parquet").exists()
    assert (tmp_path / "out.parquet.rejects.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_non_contiguous_claim_is_rejected(pipeline, rows, tmp_path):
    first = rows["claim_id"][0]
    moved = pl.concat([rows, rows.filter(pl.col("claim_id") == first).with_columns(
        (pl.col("line_no") + 100).cast(pl.Int32))])
    src = tmp_path / "in.parquet"
    moved.write_parquet(src)
    score_file(pipeline, src, tmp_path / "out.parquet", chunk_size=200, max_bad_share=0.1)
    rejects = pl.read_csv(tmp_path / "out.parquet.rejects.csv")
    assert "already scored" in rejects.filter(pl.col("claim_id") == first)["reason"][0]


def test_missing_column_is_an_input_error(pipeline, rows, tmp_path):
    src = tmp_path / "in.parquet"
    rows.drop("unit_price").write_parquet(src)
    with pytest.raises(InputError, match="unit_price"):
        score_file(pipeline, src, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_score_command(exported, rows, tmp_path):
    src = tmp_path / "in.parquet"
    rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("amount"))
                      .alias("amount")).write_parquet(src)
    runner = CliRunner()
    ok = runner.invoke(app, ["score", "--model", str(exported["model_dir"]), "--input", str(src),
                             "--output", str(tmp_path / "out.parquet")])
    assert ok.exit_code == 0, ok.output
    assert pl.read_parquet(tmp_path / "out.parquet").height == rows["claim_id"].n_unique() - 1
    failed = runner.invoke(app, ["score", "--model", str(exported["model_dir"]), "--input", str(src),
                                 "--output", str(tmp_path / "strict.parquet"), "--max-bad-share", "0"])
    assert failed.exit_code == 1
    assert not (tmp_path / "strict.parquet").exists()
    missing = runner.invoke(app, ["score", "--model", str(tmp_path / "nope"), "--input", str(src),
                                  "--output", str(tmp_path / "x.parquet")])
    assert missing.exit_code == 2


@pytest.mark.parametrize("row_group_size, chunk_size", [(100, 150), (70, 1000), (1000, 64), (7, 7)])
def test_parquet_batches_are_cut_like_pyarrow_batches(tmp_path, row_group_size, chunk_size):
    import pyarrow.parquet as pq
    from polars.testing import assert_frame_equal

    from medfraud.export.inputs import INPUT_COLUMNS
    from medfraud.serve.batch import iter_batches

    given = pl.DataFrame({"claim_id": [f"C{i // 3:04d}" for i in range(1000)],
                          "line_no": [i % 3 + 1 for i in range(1000)], "amount": [i / 4 for i in range(1000)]})
    frame = given.select(pl.col(c).cast(t) if c in given.columns else pl.lit(None, t).alias(c)
                         for c, t in INPUT_COLUMNS.items())
    src = tmp_path / "in.parquet"
    frame.with_columns(pl.lit("extra").alias("ignored")).write_parquet(src, row_group_size=row_group_size)
    ours = list(iter_batches(src, chunk_size))
    theirs = [pl.from_arrow(b) for b in pq.ParquetFile(src).iter_batches(batch_size=chunk_size,
                                                                         columns=list(INPUT_COLUMNS))]
    assert [b.height for b in ours] == [b.height for b in theirs]
    for a, b in zip(ours, theirs):
        assert_frame_equal(a, b)


def test_spoiled_parquet_in_many_row_groups_is_checked_chunk_by_chunk(pipeline, rows, tmp_path):
    # Chunks made of several row groups once crashed polars while writing the reasons.
    i = pl.int_range(pl.len())
    bad = rows.with_columns(
        pl.when(i % 13 == 1).then(pl.lit("P404")).otherwise(pl.col("patient_id")).alias("patient_id"),
        pl.when(i % 17 == 2).then(None).otherwise(pl.col("amount")).alias("amount"))
    src = tmp_path / "in.parquet"
    bad.write_parquet(src, row_group_size=70)
    report = score_file(pipeline, src, tmp_path / "out.parquet", chunk_size=150, max_bad_share=1.0)
    rejects = pl.read_csv(tmp_path / "out.parquet.rejects.csv")
    assert {r + 1 for r in range(bad.height) if r % 13 == 1} <= set(
        rejects.filter(pl.col("column") == "patient_id")["row"])
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert bad.filter(pl.col("claim_id").is_in(out["claim_id"].implode())).height \
        + rejects["row"].n_unique() == bad.height == report.rows
