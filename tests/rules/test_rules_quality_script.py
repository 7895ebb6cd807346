"""The rules-quality benchmark's scoring on hand-built hits and labels."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

from medfraud.labels import Labels

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "rules_quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("rules_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hits(rows):
    return pl.DataFrame(rows, schema=["level", "id", "rule_id"], orient="row")


def test_claim_and_entity_precision_recall(quality):
    claims = pl.DataFrame({
        "claim_id": ["C1", "C2", "C3", "C4", "C5"],
        "patient_id": ["P1", "P1", "P2", "P3", "P4"],
        "doctor_id": ["D1"] * 5, "pharmacy_id": [None] * 5, "facility_id": ["F1"] * 5})
    labels = Labels(
        claims=pl.DataFrame({"claim_id": ["C1", "C2", "C5"],
                             "typology": ["duplicate_billing", "duplicate_billing", "upcoding"],
                             "ring_id": [None] * 3}, schema_overrides={"ring_id": pl.String}),
        entities=pl.DataFrame({"entity_type": ["patient"], "entity_id": ["P2"],
                               "typology": ["phantom_patient"], "ring_id": [None]},
                              schema_overrides={"ring_id": pl.String}),
        audited=pl.DataFrame())
    hits = _hits([("claim", "C1", "R007"), ("claim", "C4", "R007"), ("claim", "C5", "R007"),
                  ("claim", "C3", "R015"), ("patient", "P3", "R016")])
    result = quality.typology_quality(hits, claims, labels)
    dup = result["duplicate_billing"]
    # C1 found, C2 missed; C3 and C4 are normal and flagged; C5 is other fraud: neither way.
    assert dup["recall"] == 0.5 and dup["precision"] == pytest.approx(1 / 3)
    assert dup["rules"][0]["rule_id"] == "R007" and dup["rules"][0]["hits_normal"] == 1
    phantom = result["phantom_patient"]
    # P2 flagged via its claim C3; P3 (normal) by a patient-level rule; P1's claim C1 too.
    assert phantom["recall"] == 1.0
    assert phantom["precision"] == pytest.approx(1 / 4)   # P1, P3, P4 are normal, all flagged
    assert result["ghost_bed"]["positives"] == 0
    assert "duplicate_billing" in quality.to_markdown(
        [{"preset": "hand", "camouflage": 0.0, "claims": 5, "hits": 5, "rules_s": 0.0,
          "typologies": result}])
