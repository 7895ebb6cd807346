"""Rule-engine quality per typology: which rules fire on each typology's labelled rows,
how often they fire on normal rows, and the engine's precision and recall.

Each typology is judged at its level (``medfraud.labels.TYPOLOGY_LEVEL``).  At an entity
level an entity is flagged when any of its claims is hit or an entity-level rule hits
it.  *Normal* units carry no label of any typology at that level; precision is
``flagged positives / (flagged positives + flagged normal units)`` (units of other
typologies are fraud too, so they count neither way).

Run (writes tests/benchmarks/results/rules_quality.{md,json})::

    .venv/bin/python tests/benchmarks/rules_quality.py                 # small preset
    .venv/bin/python tests/benchmarks/rules_quality.py --preset tiny   # quick check
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from medfraud.dataset import Dataset
from medfraud.labels import TYPOLOGY_LEVEL, Labels
from medfraud.rules import evaluate_rules, load_catalogue
from medfraud.schema import LEVEL_ID, TYPOLOGIES

RESULTS = Path(__file__).parent / "results"
CAMOUFLAGES = (0.0, 0.6)


def flagged_units(hits: pl.DataFrame, claims: pl.DataFrame, level: str) -> pl.DataFrame:
    """Units of ``level`` hit per rule: columns unit (String), rule_id.

    Claim hits roll up to the claim's owner at entity levels; entity hits count at their
    own level only.
    """
    own = hits.filter(pl.col("level") == level).select(pl.col("id").alias("unit"), "rule_id")
    if level == "claim":
        return own.unique()
    owner = LEVEL_ID[level]
    rolled = (hits.filter(pl.col("level") == "claim")
              .join(claims.select(pl.col("claim_id").alias("id"), pl.col(owner).alias("unit")),
                    on="id", how="inner")
              .filter(pl.col("unit").is_not_null()).select("unit", "rule_id"))
    return pl.concat([own, rolled]).unique()


def typology_quality(hits: pl.DataFrame, claims: pl.DataFrame, labels: Labels) -> dict:
    """Per typology: engine recall/precision and each rule's recall and normal fire rate."""
    out: dict[str, dict] = {}
    for typology in TYPOLOGIES:
        level = TYPOLOGY_LEVEL[typology]
        owner = LEVEL_ID[level]
        universe = claims.select(pl.col(owner).alias("unit")).drop_nulls().unique()
        positives = labels.positives(level, typology).select(pl.col(owner).alias("unit"))
        if positives.height == 0:
            out[typology] = {"level": level, "positives": 0}
            continue
        any_fraud = labels.positives(level).select(pl.col(owner).alias("unit"))
        normal = universe.join(any_fraud, on="unit", how="anti")
        flags = flagged_units(hits, claims, level)
        flagged = flags.select("unit").unique()
        tp = flagged.join(positives, on="unit", how="semi").height
        fp = flagged.join(normal, on="unit", how="semi").height
        per_rule = (flags.with_columns(
            pl.col("unit").is_in(positives["unit"].implode()).alias("pos"),
            pl.col("unit").is_in(normal["unit"].implode()).alias("norm"))
            .group_by("rule_id").agg(pl.col("pos").sum().alias("hits_positive"),
                                     pl.col("norm").sum().alias("hits_normal"))
            .with_columns((pl.col("hits_positive") / positives.height).alias("recall"),
                          (pl.col("hits_normal") / max(normal.height, 1)).alias("normal_rate"),
                          (pl.col("hits_positive") / (pl.col("hits_positive") + pl.col("hits_normal")))
                          .fill_nan(None).alias("precision"))
            .filter(pl.col("hits_positive") > 0)
            .sort("hits_positive", "rule_id", descending=[True, False]))
        out[typology] = {
            "level": level, "positives": positives.height, "normal_units": normal.height,
            "recall": tp / positives.height,
            "precision": tp / (tp + fp) if tp + fp else None,
            "flagged_normal_rate": fp / max(normal.height, 1),
            "rules": per_rule.to_dicts(),
        }
    return out


def run(preset: str, camouflage: float, seed: int = 11, workdir: Path | None = None) -> dict:
    """Generate ``preset`` with every typology's camouflage set, evaluate rules, score."""
    import data_synth

    overrides = [f"typologies.{t}.camouflage={camouflage}" for t in TYPOLOGIES]
    config = data_synth.load_config(preset, seed=seed, overrides=overrides)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t0 = time.perf_counter()
        path = data_synth.generate(config, Path(tmp) / "dataset")
        generated = time.perf_counter() - t0
        dataset = Dataset(path)
        t0 = time.perf_counter()
        hits = evaluate_rules(dataset, load_catalogue())
        seconds = time.perf_counter() - t0
        claims = dataset.read("claims").select(list(LEVEL_ID.values()))
        result = typology_quality(hits, claims, Labels.from_dataset(dataset))
    return {"preset": preset, "seed": seed, "camouflage": camouflage, "claims": claims.height,
            "hits": hits.height, "generate_s": round(generated, 2), "rules_s": round(seconds, 2),
            "typologies": result}


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def to_markdown(runs: list[dict]) -> str:
    lines = ["# Rule-engine quality per typology", "",
             "Precision = flagged positives / (flagged positives + flagged normal units); "
             "an entity is flagged if any of its claims or the entity itself is hit.", ""]
    for r in runs:
        lines += [f"## preset `{r['preset']}`, camouflage {r['camouflage']} "
                  f"({r['claims']:,} claims, {r['hits']:,} hits, rules {r['rules_s']} s)", "",
                  "| typology | level | positives | recall | precision | normal flagged | top rules (recall / precision) |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for typology, q in r["typologies"].items():
            if not q["positives"]:
                lines.append(f"| {typology} | {q['level']} | 0 | – | – | – | – |")
                continue
            top = ", ".join(f"{x['rule_id']} ({_pct(x['recall'])} / {_pct(x['precision'])})"
                            for x in q["rules"][:3])
            lines.append(f"| {typology} | {q['level']} | {q['positives']:,} | {_pct(q['recall'])} | "
                         f"{_pct(q['precision'])} | {_pct(q['flagged_normal_rate'])} | {top} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = [run(args.preset, c, args.seed) for c in CAMOUFLAGES]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rules_quality.json").write_text(json.dumps(runs, indent=2, ensure_ascii=False))
    (args.out / "rules_quality.md").write_text(to_markdown(runs), encoding="utf-8")
    print(to_markdown(runs))
    return runs


if __name__ == "__main__":
    main()
