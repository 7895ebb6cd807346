"""Reusable benchmark harness: wall time and peak resident memory of one call.

``measure(fn)`` runs ``fn()`` in the current process; use ``measure_in_subprocess`` to get
a peak RSS that is not polluted by earlier work (each case in a fresh interpreter, limited
to ``threads`` cores).  Other benchmarks import these two functions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_from_proc() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure(fn: Callable[[], object], poll_s: float = 0.02) -> tuple[float, int]:
    """Run ``fn()`` and return (wall seconds, peak RSS in bytes of this process during the call).

    On Linux the kernel's high-water mark (VmHWM) is reset first (``clear_refs`` = 5) and read
    after the call, which catches short spikes; elsewhere RSS is polled every ``poll_s``
    seconds by a background thread.
    """
    process = psutil.Process()
    exact = False
    try:
        _CLEAR_REFS.write_text("5")
        exact = _peak_from_proc() is not None
    except OSError:
        pass
    peak = process.memory_info().rss
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            stop.wait(poll_s)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        watcher.join()
    if exact:
        peak = max(peak, _peak_from_proc() or 0)
    return seconds, int(peak)


def measure_in_subprocess(module: str, function: str, *args: str, threads: int = 2,
                          timeout_s: float = 1800) -> dict:
    """Run ``module.function(*args)`` in a fresh interpreter on ``threads`` cores and measure it.

    The child imports the module, then measures only the call (not the imports).

    Returns
    -------
    dict with seconds (wall), cpu_seconds (user + system of the child during the call: on a
    shared machine wall time includes waiting for the cores, CPU time does not),
    peak_rss_bytes, peak_rss_mib, threads.
    """
    code = (
        "import json, importlib, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from _measure import measure\n"
        f"fn = getattr(importlib.import_module({module!r}), {function!r})\n"
        "import os\n"
        "before = os.times()\n"
        f"seconds, peak = measure(lambda: fn(*{list(args)!r}))\n"
        "after = os.times()\n"
        "cpu = (after.user - before.user) + (after.system - before.system)\n"
        "print('RESULT ' + json.dumps({'seconds': seconds, 'cpu_seconds': cpu, "
        "'peak_rss_bytes': peak}))\n"
    )
    env = dict(os.environ, POLARS_MAX_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               RAYON_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-c", code]
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        cmd = ["taskset", "-c", ",".join(map(str, cores))] + cmd
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=Path(__file__).parent)
    if done.returncode != 0:
        raise RuntimeError(f"{module}.{function}{args} failed:\n{done.stderr[-4000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["peak_rss_mib"] = round(result["peak_rss_bytes"] / 2**20, 1)
    result["threads"] = threads
    return result
