"""The default catalogue on the generated ``tiny`` preset: rules find their typologies."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from medfraud.labels import Labels
from medfraud.rules import evaluate_rules, hits_schema, summarise
from medfraud.schema import LEVEL_ID

generator = pytest.importorskip("data_synth")
if not hasattr(generator, "generate"):
    pytest.skip("data_synth.generate not available", allow_module_level=True)

# rule -> the typology its hits should belong to (claim level).
EXPECTED = {"R007": "duplicate_billing", "R009": "over_prescription",
            "R012": "split_hospitalization", "R015": "phantom_patient",
            "R020": "doctor_absent", "R021": "ghost_bed"}


@pytest.fixture(scope="module")
def hits(tiny_dataset):
    return evaluate_rules(tiny_dataset)


def test_hits_schema_and_every_level_id_exists(hits, tiny_dataset):
    assert dict(hits.schema) == hits_schema() and hits.height > 0
    claims = tiny_dataset.read("claims")
    for level in hits["level"].unique():
        ids = hits.filter(pl.col("level") == level)["id"]
        assert ids.is_in(claims[LEVEL_ID[level]].implode()).all(), level


def test_precise_rules_hit_their_typology(hits, tiny_dataset):
    labels = tiny_dataset.read("labels_claims")
    for rule_id, typology in EXPECTED.items():
        ids = hits.filter(pl.col("rule_id") == rule_id)["id"]
        assert ids.len() > 0, rule_id
        labelled = labels.filter(pl.col("typology") == typology)["claim_id"]
        share = ids.is_in(labelled.implode()).mean()
        assert share >= 0.9, (rule_id, typology, share)


def test_inventory_rule_finds_a_labelled_pharmacy(hits, tiny_dataset):
    positives = Labels.from_dataset(tiny_dataset).positives("pharmacy", "inventory_mismatch")
    found = hits.filter(pl.col("rule_id") == "R019")["id"]
    assert found.is_in(positives["pharmacy_id"].implode()).sum() >= 1


def test_window_only_judges_its_claims(hits, tiny_dataset):
    window = (date(2024, 3, 1), date(2024, 3, 31))
    march = evaluate_rules(tiny_dataset, window=window).filter(pl.col("level") == "claim")
    dates = tiny_dataset.read("claims").select("claim_id", "service_date")
    judged = march.join(dates, left_on="id", right_on="claim_id")
    assert judged.height == march.height > 0
    assert judged["service_date"].is_between(*window).all()
    # Without the future, a March verdict can only be one the full run also reached; the
    # exception is drg_upcoding, whose reference weights are computed up to the window end.
    full = set(zip(hits["rule_id"], hits["id"], strict=True))
    windowed = {(r, i) for r, i in zip(march["rule_id"], march["id"], strict=True) if r != "R018"}
    assert windowed <= full

def test_summary_matches_hits(hits):
    summary = summarise(hits)
    assert summary["hits"].sum() == hits.height


def test_quality_script_runs_on_tiny(hits, tiny_dataset):
    script = Path(__file__).parents[1] / "benchmarks" / "rules_quality.py"
    spec = importlib.util.spec_from_file_location("rules_quality", script)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    claims = tiny_dataset.read("claims").select(list(LEVEL_ID.values()))
    result = quality.typology_quality(hits, claims, Labels.from_dataset(tiny_dataset))
    assert result["doctor_absent"]["recall"] >= 0.9
    assert result["duplicate_billing"]["rules"][0]["rule_id"] == "R007"
    assert all(0 <= q.get("recall", 0) <= 1 for q in result.values())
