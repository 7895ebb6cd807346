"""Benchmark: build_features on N synthetic claims, 2 cores, vs a single group_by floor.

Run::

    .venv/bin/python tests/benchmarks/bench_features.py --claims 5000000 10000000

Each case runs in a fresh interpreter limited to ``--threads`` cores (taskset +
POLARS_MAX_THREADS) and is measured with :func:`_measure.measure` (wall seconds, peak RSS).
Results are merged into tests/benchmarks/results/features.json (keyed by case and claims, so
other benchmarks — e.g. the rules engine — can add their cases with ``record``) and
summarised in features.md.  Targets: 10M claims in <= 30 s, peak RSS <= 4 GiB, and doubling
the claims costs <= 2.2x the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _measure import measure_in_subprocess  # noqa: E402

RESULTS = HERE / "results"
TARGET_SECONDS, TARGET_RSS_GIB, TARGET_SCALING = 30.0, 4.0, 2.2


def run_features(path: str) -> None:
    """The measured call: every level of build_features over the whole dataset."""
    from medfraud.dataset import Dataset
    from medfraud.features import build_features

    features = build_features(Dataset(path))
    assert features.frame("claim").height > 0


def run_groupby_floor(path: str) -> None:
    """The floor: one polars group_by (claims per doctor, amount sum) over the same claims."""
    import polars as pl

    pl.scan_parquet(f"{path}/claims/*.parquet").group_by("doctor_id").agg(
        pl.len(), pl.col("total_amount").sum()).collect()


CASES = {"features": ("bench_features", "run_features"),
         "groupby_floor": ("bench_features", "run_groupby_floor")}


def record(name: str, entries: list[dict], notes: dict[str, str] | None = None) -> Path:
    """Merge ``entries`` (dicts with case, claims, seconds, peak_rss_mib, …) into
    results/<name>.json and rewrite results/<name>.md; ``notes`` (case -> text) are kept
    in the JSON and printed under the table.  Returns the JSON path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    old = previous.get("runs", [])
    all_notes = {**previous.get("notes", {}), **(notes or {})}
    keys = {(e["case"], e["claims"]) for e in entries}
    runs = [e for e in old if (e["case"], e["claims"]) not in keys] + entries
    runs.sort(key=lambda e: (e["case"], e["claims"]))
    path.write_text(json.dumps({"targets": {"seconds_at_10M": TARGET_SECONDS,
                                            "peak_rss_gib": TARGET_RSS_GIB,
                                            "time_ratio_for_2x_claims": TARGET_SCALING},
                                "runs": runs, "notes": all_notes}, indent=2))
    lines = [f"# {name} benchmark", "",
             "Wall seconds include waiting for the cores when the machine is shared (see the "
             "1-minute load average); CPU seconds (user + system of the measured process) do not.",
             "",
             "| case | claims | wall s | CPU s | peak RSS (MiB) | wall s / M claims | threads "
             "| load avg | measured |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for e in runs:
        lines.append(f"| {e['case']} | {e['claims']:,} | {e['seconds']:.1f} | "
                     f"{e.get('cpu_seconds', float('nan')):.1f} | {e['peak_rss_mib']:,.0f} | "
                     f"{e['seconds'] / e['claims'] * 1e6:.2f} | {e['threads']} | "
                     f"{e.get('load_avg_1m', float('nan')):.1f} | {e['measured_at'][:16]} |")
    by_case: dict[str, list[dict]] = {}
    for e in runs:
        by_case.setdefault(e["case"], []).append(e)
    lines += ["", "Scaling (time ratio between consecutive sizes, target <= "
              f"{TARGET_SCALING}x for 2x claims):", ""]
    for case, es in by_case.items():
        for a, b in zip(es, es[1:]):
            lines.append(f"- {case}: {a['claims']:,} -> {b['claims']:,} claims "
                         f"({b['claims'] / a['claims']:.1f}x): "
                         f"{b['seconds'] / a['seconds']:.2f}x wall, "
                         f"{b.get('cpu_seconds', 0) / max(a.get('cpu_seconds', 0), 1e-9):.2f}x CPU")
    if all_notes:
        lines += ["", "Notes:", ""] + [f"- {case}: {text}" for case, text in all_notes.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    return path


def run_cases(name: str, cases: dict, default_data: str, argv: list[str] | None = None) -> None:
    """Command line shared by the features and rules benchmarks: measure ``cases`` at each size
    in a fresh 2-thread subprocess and record them under ``results/<name>.*``."""
    parser = argparse.ArgumentParser(description=f"{name} benchmark: time and peak memory per claim count")
    parser.add_argument("--claims", type=int, nargs="+", default=[5_000_000, 10_000_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=default_data,
                        help="cache of synthetic datasets (one folder per size)")
    parser.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
    args = parser.parse_args(argv)

    from _synth import synthesize

    entries = []
    for n in args.claims:
        path = synthesize(Path(args.data) / f"claims_{n}", n)
        for case in args.cases:
            module, function = cases[case]
            result = measure_in_subprocess(module, function, str(path), threads=args.threads)
            entry = {"case": case, "claims": n, **result, "python": platform.python_version(),
                     "load_avg_1m": os.getloadavg()[0], "cpus_on_machine": os.cpu_count(),
                     "measured_at": datetime.now(timezone.utc).isoformat()}
            print(json.dumps(entry), flush=True)
            entries.append(entry)
    record(name, entries)


def main(argv: list[str] | None = None) -> None:
    run_cases("features", CASES, "/tmp/medfraud_bench_features", argv)


if __name__ == "__main__":
    main()
