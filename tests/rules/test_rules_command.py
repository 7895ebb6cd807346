"""``medfraud rules DATASET``: summary table, hits file, invalid datasets."""

from __future__ import annotations

import importlib.util
import shutil

import polars as pl
import pytest
import typer
from rules_testkit import claim, line, make_tables
from typer.testing import CliRunner

from medfraud.commands import rules as rules_command
from medfraud.dataset import Dataset, write_dataset
from medfraud.rules import evaluate_rules


def _app() -> typer.Typer:
    # The command module alone, so these tests do not depend on every other command.
    app = typer.Typer()
    app.command("rules")(rules_command.command)
    app.command("noop")(lambda: None)  # a second command keeps "rules" as a sub-command
    return app


def _dataset(tmp_path):
    tables = make_tables([claim("C1", patient="P2"), claim("C2")],
                         [line("C1", item_code="G2", quantity=1, unit_price=50),
                          line("C2", quantity=10, days_supply=2)])
    return write_dataset(tmp_path / "ds", tables)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_cli_prints_summary_and_writes_hits(tmp_path, suffix):
    path = _dataset(tmp_path)
    out = tmp_path / "out" / f"hits{suffix}"
    result = CliRunner().invoke(_app(), ["rules", str(path), "--out", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "R001" in result.output and "SEX_RESTRICTION" in result.output
    written = pl.read_parquet(out) if suffix == ".parquet" else pl.read_csv(out)
    expected = evaluate_rules(Dataset(path))
    assert written.height == expected.height > 0
    assert sorted(written["rule_id"].to_list()) == sorted(expected["rule_id"].to_list())
    assert not list(out.parent.glob(".*tmp*"))  # no temporary file left behind


def test_cli_rejects_invalid_dataset(tmp_path):
    path = _dataset(tmp_path)
    frame = pl.read_parquet(path / "claims" / "part-00000.parquet")
    frame.with_columns(pl.lit(-5.0).alias("total_amount")).write_parquet(
        path / "claims" / "part-00000.parquet")
    result = CliRunner().invoke(_app(), ["rules", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "negative total_amount" in result.output


def test_cli_rejects_bad_catalogue_and_suffix(tmp_path):
    path = _dataset(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: R1\n")
    result = CliRunner().invoke(_app(), ["rules", str(path), "--catalogue", str(bad)])
    assert result.exit_code == 1 and "name_zh" in result.output
    result = CliRunner().invoke(_app(), ["rules", str(path), "--out", str(tmp_path / "h.xlsx")])
    assert result.exit_code == 2


def _generator_ready() -> bool:
    if importlib.util.find_spec("data_synth") is None:
        return False
    import data_synth
    return hasattr(data_synth, "generate") and hasattr(data_synth, "load_config")


needs_generator = pytest.mark.skipif(not _generator_ready(), reason="data_synth not available")


@needs_generator
def test_cli_on_tiny_dataset(tiny_dataset_path, tmp_path):
    out = tmp_path / "hits.parquet"
    result = CliRunner().invoke(_app(), ["rules", str(tiny_dataset_path), "--out", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    hits = pl.read_parquet(out)
    assert hits.height > 0 and hits["rule_id"].n_unique() >= 5


@needs_generator
def test_tiny_hits_identical_without_labels(tiny_dataset_path, tmp_path):
    copy = tmp_path / "nolabels"
    shutil.copytree(tiny_dataset_path, copy)
    for table in ("labels_claims", "labels_entities", "audited"):
        shutil.rmtree(copy / table, ignore_errors=True)
    with_labels = evaluate_rules(Dataset(tiny_dataset_path))
    assert evaluate_rules(Dataset(copy)).equals(with_labels)
