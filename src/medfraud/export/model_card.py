"""The model card: what the exported model was trained on, how well it did, what it cannot do.

Written twice with the same content: ``model_card.json`` (machine-readable; the REST
service's ``/version`` reads it) and ``MODEL_CARD.md`` (for people).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from medfraud.export.inputs import INPUT_COLUMNS
from medfraud.labels import TYPOLOGY_LEVEL
from medfraud.schema import CONTRACT_VERSION, TYPOLOGIES

KNOWN_LIMITS = [
    "Claims whose patient, doctor, facility, pharmacy or drug is not in the model's snapshot are "
    "rejected (batch: reported in the rejects file; REST: 422), not scored: the model has no "
    "profile for them. Identity checks against the insurer's registry (phantom patients with "
    "invented ids) must run before scoring.",
    "Context is frozen at export: history claims, the duty roster and entity profiles come from "
    "the training window. Claims far after it lose look-back context (refills, readmissions, "
    "duty roster) and are scored on drifted peer statistics; re-export regularly.",
    "Claims of one scoring call see each other as context (same-day card use, duplicates); a "
    "batch file is scored chunk by chunk, so claims in different chunks do not see each other.",
    "Entity-level detectors (doctor, patient, pharmacy, facility) contribute the profile score "
    "of the claim's entity computed at export; they do not update with new claims.",
    "Prescriptions and pharmacy purchases are not part of the input: stock reconciliation "
    "(inventory_mismatch) reaches claims only through the pharmacy profile.",
    "Calibrated risk is a probability under the labelled data's base rate; on a population "
    "with another fraud rate, treat it as a ranking score and recalibrate.",
]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def build_card(*, name: str, data_digest: str, dataset_path: str | None, manifest: Mapping[str, Any],
               train_window: tuple[Any, Any], holdout_window: tuple[Any, Any] | None,
               detectors: list[dict[str, Any]], skipped: Mapping[str, str],
               holdout_metrics: Mapping[str, Any], run_metrics: Mapping[str, float],
               run: Mapping[str, Any], calibration: Mapping[str, Any], bands: Mapping[str, Any],
               typologies_seen: list[str], pip_requirements: list[str]) -> dict[str, Any]:
    """The model card as a JSON-able dict (see module docstring)."""
    levels = {d["level"] for d in detectors}
    covered = [t for t in TYPOLOGIES if t in typologies_seen]
    card = {
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "contract_version": CONTRACT_VERSION,
        "data": {"digest": data_digest, "path": dataset_path,
                 "generator_version": manifest.get("generator_version"),
                 "seed": manifest.get("seed"), "row_counts": manifest.get("row_counts", {}),
                 "train_window": [str(d) for d in train_window],
                 "holdout_window": [str(d) for d in holdout_window] if holdout_window else None},
        "run": dict(run),
        "detectors": detectors,
        "skipped_detectors": dict(skipped),
        "levels_scored": sorted(levels),
        "typologies_covered": covered,
        "typology_levels": {t: TYPOLOGY_LEVEL[t] for t in covered},
        "metrics": {"holdout": dict(holdout_metrics), "run": dict(run_metrics)},
        "calibration": dict(calibration),
        "bands": dict(bands),
        "input": {"format": "one row per claim line, claim columns repeated",
                  "columns": {c: str(t) for c, t in INPUT_COLUMNS.items()}},
        "output": {"claim_id": "String", "risk": "Float64 in [0, 1]", "band": "low | medium | high",
                   "reasons": "List[String] (pyfunc: '; '-joined String)"},
        "pip_requirements": list(pip_requirements),
        "known_limits": KNOWN_LIMITS,
    }
    return _clean(card)


def card_markdown(card: Mapping[str, Any]) -> str:
    """``MODEL_CARD.md`` text of a card built by :func:`build_card`."""
    data, metrics = card["data"], card["metrics"]
    lines = [f"# Model card: {card['name']}", "",
             f"Created {card['created_at']} · data contract v{card['contract_version']}", "",
             "## Data", "",
             f"- dataset digest: `{data['digest']}`",
             f"- dataset: `{data['path']}` (generator {data['generator_version']}, seed {data['seed']})",
             f"- training window (history, peer reference, bands): {data['train_window'][0]} – "
             f"{data['train_window'][1]}"]
    if data.get("holdout_window"):
        lines.append(f"- calibration window (held out): {data['holdout_window'][0]} – "
                     f"{data['holdout_window'][1]}")
    run = card.get("run") or {}
    if run:
        lines.append(f"- MLflow run: `{run.get('run_id')}` (experiment {run.get('experiment')})")
    lines += ["", "## Detectors", "", "| name | family | level | weight |", "|---|---|---|---|"]
    lines += [f"| {d['name']} | {d['family']} | {d['level']} | {d['weight']:g} |" for d in card["detectors"]]
    for name, why in card.get("skipped_detectors", {}).items():
        lines.append(f"\nSkipped `{name}`: {why}.")
    lines += ["", "## Typologies covered", "",
              ", ".join(f"{t} ({lvl})" for t, lvl in card["typology_levels"].items()) or "none labelled",
              "", "## Metrics on the held-out claims (calibrated risk)", "", "| metric | value |",
              "|---|---|"]
    for key, value in metrics["holdout"].items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    if metrics.get("run"):
        lines += ["", "## Metrics logged by the run (test split)", "", "| metric | value |", "|---|---|"]
        for key, value in sorted(metrics["run"].items()):
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
    bands, calibration = card["bands"], card["calibration"]
    lines += ["", "## Risk and bands", "",
              f"- calibration: {calibration.get('method')} fitted on "
              f"{(calibration.get('fitted_on') or {}).get('rows')} held-out claims",
              f"- high: raw score ≥ {bands['high_threshold']:.4f} (top {bands['high_share']:.0%} of "
              "training claims)",
              f"- medium: raw score ≥ {bands['medium_threshold']:.4f} (top {bands['medium_share']:.0%})",
              "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in card["known_limits"]]
    lines += ["", "## Requirements", "", "medfraud itself must be installed (wheel); pinned "
              "dependencies:", "", "```", *card["pip_requirements"], "```", ""]
    return "\n".join(lines)
