"""``validate`` reports every contract violation with table, column, count and an example."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from typer.testing import CliRunner

from medfraud.cli import app
from medfraud.dataset import write_dataset
from medfraud.schema import DataError, validate
from tests.contract_tables import valid_tables


def _write(tmp_path, tables=None):
    return write_dataset(tmp_path / "ds", tables or valid_tables(), seed=0, config={})


def _replace_raw(path, table, frame):
    """Overwrite a table's only part with ``frame`` exactly as given (no casting)."""
    (part,) = (path / table).glob("*.parquet")
    frame.write_parquet(part)


def _problems(path, table=None, column=None):
    problems = validate(path).problems
    return [p for p in problems
            if (table is None or p.table == table) and (column is None or p.column == column)]


def test_valid_dataset_passes(tmp_path):
    report = validate(_write(tmp_path))
    assert report.ok, report.problems
    assert report.row_counts["claims"] == 3


def test_missing_column(tmp_path):
    path = _write(tmp_path)
    _replace_raw(path, "claims", valid_tables()["claims"].drop("region"))
    (problem,) = _problems(path, "claims", "region")
    assert "missing column" in problem.message


def test_wrong_dtype(tmp_path):
    path = _write(tmp_path)
    claims = valid_tables()["claims"].with_columns(pl.col("total_amount").cast(pl.String))
    _replace_raw(path, "claims", claims)
    (problem,) = _problems(path, "claims", "total_amount")
    assert "wrong dtype String" in problem.message and "Float64" in problem.message


def test_orphan_foreign_key_names_count_and_example(tmp_path):
    tables = valid_tables()
    tables["claims"] = tables["claims"].with_columns(
        pl.when(pl.col("claim_id") == "C3").then(pl.lit("P404")).otherwise("patient_id").alias("patient_id"))
    path = _write(tmp_path, tables)
    (problem,) = _problems(path, "claims", "patient_id")
    assert problem.bad_rows == 1
    assert "P404" in problem.example and "patients.patient_id" in problem.message


def test_orphan_claim_line(tmp_path):
    tables = valid_tables()
    tables["claim_lines"] = tables["claim_lines"].with_columns(pl.lit("C999").alias("claim_id"))
    (problem,) = _problems(_write(tmp_path, tables), "claim_lines", "claim_id")
    assert problem.bad_rows == 3


def test_duplicate_id(tmp_path):
    tables = valid_tables()
    tables["patients"] = pl.concat([tables["patients"], tables["patients"].head(1)])
    (problem,) = _problems(_write(tmp_path, tables), "patients", "patient_id")
    assert "duplicate key" in problem.message and problem.bad_rows == 2
    assert "P1" in problem.example


def test_negative_amount(tmp_path):
    tables = valid_tables()
    tables["claim_lines"] = tables["claim_lines"].with_columns(
        pl.when(pl.col("line_no") == 1).then(-pl.col("amount")).otherwise("amount").alias("amount"))
    problems = _problems(_write(tmp_path, tables), "claim_lines", "amount")
    assert [p.bad_rows for p in problems] == [3]
    assert "negative amount" in problems[0].message


def test_discharge_before_admit(tmp_path):
    tables = valid_tables()
    tables["claims"] = tables["claims"].with_columns(
        pl.when(pl.col("claim_id") == "C2").then(pl.lit(date(2024, 1, 1)))
        .otherwise("discharge_date").alias("discharge_date"))
    (problem,) = _problems(_write(tmp_path, tables), "claims", "discharge_date")
    assert "before admit_date" in problem.message and "C2" in problem.example


def test_filled_before_issued(tmp_path):
    tables = valid_tables()
    tables["prescriptions"] = tables["prescriptions"].with_columns(
        (pl.col("issued_at") - pl.duration(days=1)).alias("filled_at"))
    (problem,) = _problems(_write(tmp_path, tables), "prescriptions", "filled_at")
    assert problem.bad_rows == 1


def test_level_out_of_range_and_null_in_required_column(tmp_path):
    tables = valid_tables()
    tables["facilities"] = tables["facilities"].with_columns(pl.lit(4).alias("level"))
    tables["doctors"] = tables["doctors"].with_columns(
        pl.when(pl.col("doctor_id") == "D2").then(None).otherwise("title").alias("title"))
    path = _write(tmp_path, tables)
    assert "level must be 1, 2 or 3" in _problems(path, "facilities", "level")[0].message
    (null_problem,) = _problems(path, "doctors", "title")
    assert null_problem.bad_rows == 1 and "null" in null_problem.message


def test_empty_table(tmp_path):
    tables = valid_tables()
    tables["drugs"] = tables["drugs"].clear()
    problems = _problems(_write(tmp_path, tables), "drugs")
    assert any("empty" in p.message for p in problems)


def test_file_that_is_not_parquet(tmp_path):
    path = _write(tmp_path)
    (part,) = (path / "claims").glob("*.parquet")
    part.write_text("claim_id,patient_id\nC1,P1\n")
    (problem,) = _problems(path, "claims")
    assert "not a readable Parquet file" in problem.message and part.name in problem.message


def test_missing_manifest(tmp_path):
    path = _write(tmp_path)
    (path / "manifest.json").unlink()
    (problem,) = _problems(path, "manifest")
    assert "missing manifest.json" in problem.message


def test_missing_table(tmp_path):
    path = _write(tmp_path)
    for part in (path / "duty_roster").glob("*"):
        part.unlink()
    (problem,) = _problems(path, "duty_roster")
    assert "table is missing" in problem.message


def test_tampered_files_break_manifest_consistency(tmp_path):
    path = _write(tmp_path)
    tables = valid_tables()
    _replace_raw(path, "claims", tables["claims"].with_columns(pl.col("total_amount") + 0)
                 .vstack(tables["claims"].head(0)))
    claims = pl.read_parquet(next((path / "claims").glob("*.parquet")))
    _replace_raw(path, "claims", claims.head(2))
    messages = [p.message for p in _problems(path, "manifest")]
    assert any("claims has 2 rows but the manifest says 3" in m for m in messages)
    assert any("digest" in m for m in messages)


def test_label_tables_are_optional(tmp_path):
    tables = {k: v for k, v in valid_tables().items() if not k.startswith(("labels", "audited"))}
    assert validate(_write(tmp_path, tables)).ok


def test_several_failures_are_all_reported(tmp_path):
    tables = valid_tables()
    tables["claims"] = tables["claims"].with_columns(pl.lit(-1.0).alias("self_paid"))
    tables["patients"] = pl.concat([tables["patients"], tables["patients"]])
    report = validate(_write(tmp_path, tables))
    where = {(p.table, p.column) for p in report.problems}
    assert ("claims", "self_paid") in where and ("patients", "patient_id") in where
    with pytest.raises(DataError, match="problem"):
        report.raise_if_failed()


def test_cli_exits_non_zero_and_lists_problems(tmp_path):
    tables = valid_tables()
    tables["claims"] = tables["claims"].with_columns(pl.lit("D404").alias("doctor_id"))
    path = _write(tmp_path, tables)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "claims.doctor_id" in result.output and "D404" in result.output


def test_cli_ok(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(_write(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
