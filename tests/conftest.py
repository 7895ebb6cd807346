"""Shared fixtures: one generated ``tiny`` dataset per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

TINY_SEED = 7


@pytest.fixture(scope="session")
def tiny_dataset_path(tmp_path_factory) -> Path:
    """Path of a ``tiny`` preset dataset generated once per session (seed 7). Do not modify it."""
    import data_synth

    out = tmp_path_factory.mktemp("tiny") / "dataset"
    config = data_synth.load_config("tiny", seed=TINY_SEED)
    return data_synth.generate(config, out)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_dataset_path):
    from medfraud.dataset import Dataset

    return Dataset(tiny_dataset_path)
