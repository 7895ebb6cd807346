import polars as pl
from typer.testing import CliRunner

from medfraud.cli import app


def test_extract_writes_latest_claims_with_their_lines(tiny_dataset, tmp_path):
    out = tmp_path / "batch.parquet"
    result = CliRunner().invoke(app, ["extract", str(tiny_dataset.path), "--out", str(out), "--limit", "30"])
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out)
    claims = tiny_dataset.read("claims").sort(["service_date", "claim_id"]).tail(30)
    assert set(rows["claim_id"]) == set(claims["claim_id"])
    lines = tiny_dataset.read("claim_lines").filter(pl.col("claim_id").is_in(claims["claim_id"].implode()))
    assert rows.height == lines.height
    assert {"total_amount", "line_no", "item_code"} <= set(rows.columns)


def test_extract_window_and_bad_arguments(tiny_dataset, tmp_path):
    out = tmp_path / "batch.csv"
    ok = CliRunner().invoke(app, ["extract", str(tiny_dataset.path), "--out", str(out),
                                  "--start", "2024-03-01", "--end", "2024-03-31"])
    assert ok.exit_code == 0, ok.output
    dates = pl.read_csv(out, try_parse_dates=True)["service_date"]
    assert str(dates.min()) >= "2024-03-01" and str(dates.max()) <= "2024-03-31"
    bad = CliRunner().invoke(app, ["extract", str(tiny_dataset.path), "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and not (tmp_path / "x.txt").exists()
    missing = CliRunner().invoke(app, ["extract", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 1
