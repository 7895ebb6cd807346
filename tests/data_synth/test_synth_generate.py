"""Determinism, sharding, camouflage and the generate command."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

import data_synth
from medfraud.cli import app
from medfraud.dataset import Dataset
from medfraud.schema import validate
from tests.data_synth._signatures import drug_lines, labelled, off_duty, over_dose


def _generate(tmp_path, name, seed=7, overrides=(), claims=None):
    config = data_synth.load_config("tiny", seed=seed, overrides=overrides, claims=claims)
    return Dataset(data_synth.generate(config, tmp_path / name))


def test_same_seed_same_digest_other_seed_differs(tmp_path, tiny_dataset):
    again = _generate(tmp_path, "again")
    assert again.digest == tiny_dataset.digest
    other = _generate(tmp_path, "other", seed=8)
    assert other.digest != tiny_dataset.digest


def test_several_shards_stay_valid_and_deterministic(tmp_path):
    overrides = ["shard_claims=1500"]
    first = _generate(tmp_path, "a", overrides=overrides)
    second = _generate(tmp_path, "b", overrides=overrides)
    assert first.manifest["shards"] >= 3
    assert first.digest == second.digest
    report = validate(first.path)
    assert report.ok, "\n".join(map(str, report.problems))
    assert len(list((first.path / "claims").glob("*.parquet"))) == first.manifest["shards"]


def test_claims_scales_the_population(tmp_path):
    config = data_synth.load_config("tiny", claims=3_000)
    base = data_synth.load_config("tiny")
    assert config.populations.patients < base.populations.patients
    ds = Dataset(data_synth.generate(config, tmp_path / "scaled"))
    assert 2_000 <= ds.manifest["row_counts"]["claims"] <= 4_500


def test_generate_refuses_non_empty_out(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        data_synth.generate(data_synth.load_config("tiny"), out)
    assert (out / "keep.txt").read_text() == "x"


def _signature_share(ds: Dataset, typology: str) -> float:
    claims = labelled(ds, typology)
    if typology == "over_prescription":
        lines = drug_lines(ds).join(claims.select("claim_id"), on="claim_id")
        excess = lines.with_columns((pl.col("quantity") / (pl.col("max_daily_units") * pl.col("days_supply")))
                                    .alias("ratio")).filter(over_dose())
        return float(excess["ratio"].mean() - 1)
    if typology == "doctor_absent":
        roster = ds.read("duty_roster").select("doctor_id", pl.col("date").alias("service_date"))
        return claims.join(roster, on=["doctor_id", "service_date"], how="anti").height / claims.height
    if typology == "duplicate_billing":
        lines = ds.read("claim_lines").join(claims.select("claim_id"), on="claim_id")
        dup = lines.group_by("claim_id", "item_code").len().filter(pl.col("len") >= 2)["claim_id"].n_unique()
        return dup / claims.height
    raise KeyError(typology)


@pytest.mark.parametrize("typology", ["over_prescription", "doctor_absent", "duplicate_billing"])
def test_camouflage_weakens_the_simple_signature(tmp_path, typology):
    blatant = _generate(tmp_path, "blatant", overrides=[f"typologies.{typology}.camouflage=0"])
    hidden = _generate(tmp_path, "hidden", overrides=[f"typologies.{typology}.camouflage=0.9"])
    strong, weak = _signature_share(blatant, typology), _signature_share(hidden, typology)
    assert weak < 0.6 * strong, (strong, weak)
    # the camouflaged cases are still labelled
    assert labelled(hidden, typology).height >= 10
    if typology == "doctor_absent":
        assert off_duty(labelled(hidden, typology), hidden).all()


def test_cli_generate_and_refuse_non_empty(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["generate", "--preset", "tiny", "--out", str(out), "--seed", "3",
                                 "--set", "months=3"])
    assert result.exit_code == 0, result.output
    assert Dataset(out).manifest["config"]["months"] == 3
    again = runner.invoke(app, ["generate", "--out", str(out)])
    assert again.exit_code == 1
    assert "not empty" in again.output and "--overwrite" in again.output
    forced = runner.invoke(app, ["generate", "--out", str(out), "--overwrite", "--seed", "4"])
    assert forced.exit_code == 0, forced.output
    assert Dataset(out).manifest["seed"] == 4


def test_cli_unknown_set_path_lists_close_matches(tmp_path):
    result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "x"),
                                      "--set", "typologies.upcoding.prevalense=0.1"])
    assert result.exit_code == 2
    assert "typologies.upcoding.prevalence" in result.output
    assert not (tmp_path / "x").exists()
