"""``medfraud serve`` in a subprocess on loopback, for tests and the scoring benchmark."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: str | Path, *, workers: int = 1, env: Mapping[str, str] | None = None,
                   start_timeout: float = 180.0) -> Iterator[str]:
    """Start ``medfraud serve --model MODEL`` and yield its base URL once ``/health`` answers.

    Raises RuntimeError (with the end of the server's stderr) if it exits or does not answer
    within ``start_timeout`` seconds; the server is terminated on exit either way.
    """
    port = free_port()
    medfraud = Path(sys.executable).with_name("medfraud")
    server = subprocess.Popen([str(medfraud), "serve", "--model", str(model), "--port", str(port),
                               "--workers", str(workers)], env=dict(env) if env else None,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
