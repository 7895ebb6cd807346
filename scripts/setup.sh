#!/usr/bin/env bash
# Create .venv (Python 3.11) and install medfraud with its dev tools and Ray; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned resolve would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
# ray: the optional scale-out backend (medfraud run --backend ray), tested by the suite.
.venv/bin/python -m pip install -q -e ".[dev,ray]"
