"""The engine: hits schema, windows, entity roll-up, datasets on disk, summaries."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from rules_testkit import claim, line, make_tables, run_kind

from medfraud.dataset import Dataset, write_dataset
from medfraud.rules import (
    evaluate_rules,
    evaluate_tables,
    hits_schema,
    load_catalogue,
    summarise,
)
from medfraud.schema import validate


def _world():
    """A small world breaking several default rules at once."""
    claims = [claim("C1", "2024-03-01", patient="P2"),                          # sex + age (G2)
              claim("C2", "2024-03-02", amount=300.0),                          # dose (G1 x 10)
              claim("C3", "2024-03-22", setting="pharmacy", pharmacy="R1"),     # overlapping refill
              claim("C4", "2024-03-20", setting="pharmacy", pharmacy="R1"),
              claim("C5", "2024-04-05")]                                        # clean
    lines = [line("C1", item_code="G2", quantity=1, unit_price=50),
             line("C2", quantity=10, days_supply=2),
             line("C3", quantity=6, days_supply=6), line("C4", quantity=21, days_supply=7),
             line("C5", quantity=3, days_supply=1)]
    return make_tables(claims, lines)


def test_hits_schema_and_default_catalogue():
    hits = evaluate_tables(_world())
    assert dict(hits.schema) == hits_schema()
    # The repeated columns are enums over the catalogue's values, sorted so that they
    # order like the strings they stand for.
    catalogue = load_catalogue()
    assert hits.schema["rule_id"] == pl.Enum(sorted(r.id for r in catalogue.rules))
    assert hits.schema["level"].categories.to_list() == sorted(
        hits.schema["level"].categories.to_list())
    assert hits.equals(hits.sort(pl.col("rule_id").cast(pl.String), "id"))
    assert hits.filter(pl.col("rule_id") == "R001").height >= 1
    got = set(zip(hits["rule_id"], hits["id"], strict=True))
    assert {("R001", "C1"), ("R002", "C1"), ("R009", "C2"), ("R010", "C3")} <= got
    assert "C5" not in hits["id"].to_list()
    assert hits.sort("rule_id", "id").equals(hits)


def test_window_excludes_claims_but_keeps_history():
    tables = _world()
    march_end = evaluate_tables(tables, window=(date(2024, 3, 21), date(2024, 3, 31)))
    assert set(march_end["id"]) == {"C3"}       # C3's earlier fill C4 is history
    early = evaluate_tables(tables, window=(date(2024, 3, 1), date(2024, 3, 20)))
    assert "C3" not in set(early["id"]) and {"C1", "C2"} <= set(early["id"])
    with pytest.raises(ValueError, match="after its end"):
        evaluate_tables(tables, window=(date(2024, 4, 1), date(2024, 3, 1)))


def test_window_end_hides_the_future():
    # C2 would make C1 the second stay of an overlap only if the engine read the future.
    tables = make_tables([
        claim("C1", "2024-03-05", setting="inpatient", admit="2024-03-01", discharge="2024-03-05"),
        claim("C2", "2024-03-20", setting="inpatient", admit="2024-03-10", discharge="2024-03-20")])
    early = (date(2024, 3, 1), date(2024, 3, 10))
    assert run_kind("readmission", tables, window=early).height == 0
    assert sorted(run_kind("readmission", tables)["id"]) == ["C1", "C2"]


def test_entity_level_rules_sum_claim_amounts():
    tables = make_tables([claim("C1", patient="P1"), claim("C2", patient="P1", facility="F2",
                                                           doctor="D2")],
                         [line("C1", item_code="G2", quantity=1, unit_price=50),
                          line("C2", item_code="G2", quantity=2, unit_price=50)])
    facility = run_kind("facility_level_restriction", tables, level="facility")
    assert facility.select("level", "id", "amount_at_stake").rows() == [("facility", "F2", 100.0)]


def test_missing_table_raises_or_skips():
    tables = _world()
    del tables["pharmacy_purchases"]
    with pytest.raises(KeyError, match="R019.*pharmacy_purchases"):
        evaluate_tables(tables)
    skipped = evaluate_tables(tables, missing="skip")
    assert "R019" not in set(skipped["rule_id"]) and "R001" in set(skipped["rule_id"])


def test_dataset_on_disk_is_valid_and_matches_in_memory(tmp_path):
    tables = _world()
    path = write_dataset(tmp_path / "ds", tables)
    report = validate(path)
    assert report.ok, report.problems
    on_disk = evaluate_rules(Dataset(path))
    assert on_disk.equals(evaluate_tables(tables))


def test_rules_do_not_read_labels(tmp_path):
    tables = _world()
    with_labels = dict(tables, labels_claims=pl.DataFrame(
        {"claim_id": ["C5"], "typology": ["duplicate_billing"], "ring_id": [None]},
        schema={"claim_id": pl.String, "typology": pl.String, "ring_id": pl.String}))
    path = write_dataset(tmp_path / "ds", with_labels)
    hits = evaluate_rules(Dataset(path))
    # Corrupt the label table: the engine must not even open it.
    for part in (path / "labels_claims").glob("*.parquet"):
        part.write_bytes(b"not parquet")
    assert evaluate_rules(Dataset(path)).equals(hits)


def test_disabled_rules_are_skipped_and_empty_result_has_schema():
    catalogue = load_catalogue()
    off = catalogue.model_copy(update={"rules": [r.model_copy(update={"enabled": False})
                                                 for r in catalogue.rules]})
    hits = evaluate_tables(_world(), off)
    assert hits.height == 0 and dict(hits.schema) == hits_schema(off)


def test_summarise_counts_and_money():
    hits = evaluate_tables(_world())
    summary = summarise(hits)
    r001 = summary.filter(pl.col("rule_id") == "R001").row(0, named=True)
    assert r001["hits"] == 1 and r001["distinct_ids"] == 1 and r001["amount_at_stake"] == 50.0
    assert summary["hits"].sum() == hits.height
    assert summary["amount_at_stake"].sum() == pytest.approx(hits["amount_at_stake"].sum())
