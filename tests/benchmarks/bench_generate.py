"""Benchmark of ``medfraud generate``: throughput, scaling and peak memory.

Run as a script (``python tests/benchmarks/bench_generate.py [--claims 10000000]``) or with
pytest (``pytest tests/benchmarks/bench_generate.py``); it is not part of the default suite.
Each measurement runs in a child process pinned to two cores; peak RSS (the child and its
children) is polled by a thread with psutil.  Results go to
``tests/benchmarks/results/generate.json`` and ``generate.md``.

Targets: 10M claims end to end in ≤ 40 s with peak RSS ≤ 2 GiB; 2× claims ≤ 2.2× time.
The "floor" is polars writing random frames with the row counts and columns of the
claims and claim_lines tables, with the Parquet settings of ``DatasetWriter`` (what any
generator must at least pay to write Parquet).

Wall time depends on what else runs on the machine, so each run also records the CPU
seconds (user + system) of the child process: on a shared machine that is the figure to
compare between versions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SECONDS, TARGET_RSS_GIB = 40.0, 2.0
CORES = 2

FLOOR_SCRIPT = r"""
import sys, numpy as np, polars as pl
from medfraud.dataset import PARQUET_OPTIONS, conform
n_claims, n_lines, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
chunk = 1_000_000
for part, start in enumerate(range(0, n_claims, chunk)):
    n = min(chunk, n_claims - start)
    ids = pl.Series(np.arange(start, start + n)).cast(pl.String).str.zfill(12)
    claims = pl.DataFrame({
        "claim_id": "C" + ids, "patient_id": "P" + ids, "doctor_id": "D" + ids.str.slice(6),
        "facility_id": "F" + ids.str.slice(8), "pharmacy_id": "R" + ids.str.slice(8),
        "setting": np.array(["outpatient", "pharmacy"])[rng.integers(0, 2, n)],
        "service_date": pl.Series(rng.integers(19700, 20000, n), dtype=pl.Int32).cast(pl.Date),
        "admit_date": pl.Series(rng.integers(19700, 20000, n), dtype=pl.Int32).cast(pl.Date),
        "discharge_date": pl.Series(rng.integers(19700, 20000, n), dtype=pl.Int32).cast(pl.Date),
        "diagnosis_code": "J" + ids.str.slice(10), "drg_group": "AR" + ids.str.slice(10),
        "drg_weight": rng.random(n), "total_amount": rng.random(n) * 500, "fund_paid": rng.random(n),
        "self_paid": rng.random(n), "region": "REG" + ids.str.slice(10), "cross_region": rng.random(n) < 0.05,
        "settled_at": pl.Series(rng.integers(0, 10**15, n)).cast(pl.Datetime("us")),
    })
    conform("claims", claims).write_parquet(f"{out}/claims-{part}.parquet", **PARQUET_OPTIONS)
    m = int(n * n_lines / n_claims)
    line_ids = "C" + pl.Series(np.sort(rng.integers(start, start + n, m))).cast(pl.String).str.zfill(12)
    lines = pl.DataFrame({
        "claim_id": line_ids, "line_no": rng.integers(1, 5, m).astype(np.int32),
        "item_type": np.array(["drug", "exam"])[rng.integers(0, 2, m)],
        "item_code": "X" + pl.Series(rng.integers(0, 1000, m)).cast(pl.String).str.zfill(5),
        "quantity": rng.integers(1, 30, m).astype(float), "days_supply": rng.integers(1, 8, m).astype(np.int32),
        "unit_price": rng.random(m) * 100, "amount": rng.random(m) * 100,
    })
    conform("claim_lines", lines).write_parquet(f"{out}/lines-{part}.parquet", **PARQUET_OPTIONS)
"""


def _measure(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd`` pinned to CORES cores; return wall seconds, CPU seconds and peak RSS (GiB, with children)."""
    pin = ["taskset", "-c", ",".join(str(c) for c in range(CORES))] if shutil.which("taskset") else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(pin + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)      # the child was waited for: its CPU is in
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_gib": round(peak / 2**30, 3)}


def run(claims_list: list[int], preset: str = "medium") -> dict:
    env = {**os.environ, "POLARS_MAX_THREADS": str(CORES)}
    medfraud = str(Path(sys.executable).with_name("medfraud"))
    results = {"cores": CORES, "preset": preset, "load_average_at_start": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        for claims in claims_list:
            out = Path(tmp) / f"ds_{claims}"
            stats = _measure([medfraud, "generate", "--preset", preset, "--claims", str(claims),
                              "--out", str(out)], env)
            manifest = json.loads((out / "manifest.json").read_text())
            rows = manifest["row_counts"]
            stats.update(claims_requested=claims, claims=rows["claims"], claim_lines=rows["claim_lines"],
                         prescriptions=rows["prescriptions"], pharmacy_purchases=rows["pharmacy_purchases"],
                         shards=manifest["shards"], claims_per_s=round(rows["claims"] / stats["wall_s"]),
                         size_mib=round(sum(f.stat().st_size for f in out.rglob("*.parquet")) / 2**20, 1))
            floor_dir = Path(tmp) / f"floor_{claims}"
            floor_dir.mkdir()
            floor = _measure([sys.executable, "-c", FLOOR_SCRIPT, str(rows["claims"]), str(rows["claim_lines"]),
                              str(floor_dir)], env)
            stats["floor_wall_s"], stats["floor_peak_rss_gib"] = floor["wall_s"], floor["peak_rss_gib"]
            stats["floor_cpu_s"] = floor["cpu_s"]
            results["runs"].append(stats)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(floor_dir, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()
    runs = sorted(results["runs"], key=lambda r: r["claims"])
    if len(runs) >= 2:
        small, big = runs[0], runs[-1]
        results["scaling"] = {
            "claims_ratio": round(big["claims"] / small["claims"], 2),
            "time_ratio": round(big["wall_s"] / small["wall_s"], 2),
            "cpu_ratio": round(big["cpu_s"] / small["cpu_s"], 2),
            "rss_ratio": round(big["peak_rss_gib"] / max(small["peak_rss_gib"], 1e-9), 2),
        }
    biggest = runs[-1]
    results["targets"] = {"wall_s<=40": biggest["wall_s"] <= TARGET_SECONDS,
                          "peak_rss_gib<=2": biggest["peak_rss_gib"] <= TARGET_RSS_GIB}
    if "scaling" in results:
        sc = results["scaling"]
        results["targets"]["time_ratio<=1.1*claims_ratio"] = sc["time_ratio"] <= 1.1 * sc["claims_ratio"]
    return results


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generate.json").write_text(json.dumps(results, indent=2))
    lines = ["# generate benchmark", "",
             f"{results['cores']} cores, preset `{results['preset']}` scaled with --claims; load average at "
             f"start {tuple(round(x, 1) for x in results['load_average_at_start'])}, at end "
             f"{tuple(round(x, 1) for x in results.get('load_average_at_end', ()))} (1, 5, 15 min).", "",
             "| claims | lines | wall s | CPU s | claims/s | peak RSS GiB | floor wall s | floor CPU s | shards "
             "| size MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        lines.append(f"| {r['claims']:,} | {r['claim_lines']:,} | {r['wall_s']} | {r.get('cpu_s', '')} | "
                     f"{r['claims_per_s']:,} | {r['peak_rss_gib']} | {r['floor_wall_s']} | "
                     f"{r.get('floor_cpu_s', '')} | {r['shards']} | {r['size_mib']} |")
    if "scaling" in results:
        sc = results["scaling"]
        lines += ["", f"Scaling: {sc['claims_ratio']}× claims → {sc['time_ratio']}× wall time, "
                      f"{sc.get('cpu_ratio', '?')}× CPU time, {sc['rss_ratio']}× peak RSS."]
    lines += ["", "Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in results["targets"].items())]
    (RESULTS / "generate.md").write_text("\n".join(lines) + "\n")


def test_bench_generate():
    results = run([5_000_000, 10_000_000])
    write(results)
    assert results["runs"][-1]["claims"] > 9_000_000


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, nargs="+", default=[5_000_000, 10_000_000])
    parser.add_argument("--preset", default="medium")
    args = parser.parse_args()
    out = run(args.claims, args.preset)
    write(out)
    print((RESULTS / "generate.md").read_text())
