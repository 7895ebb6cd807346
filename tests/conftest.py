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


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Dataset, MLflow run and exported + registered model (see tests/export/factory.py).

    Shared by tests/export and tests/serve. The tracking store is a sqlite file of its own
    (``exported["uri"]``); tests that resolve ``models:/`` URIs set ``MLFLOW_TRACKING_URI``
    to it with monkeypatch.
    """
    from tests.export.factory import build_exported_model

    return build_exported_model(tmp_path_factory.getbasetemp() / "medfraud_export_bundle")


@pytest.fixture(scope="session")
def pipeline(exported):
    """The exported model's ScoringPipeline, loaded once."""
    from medfraud.export.model_io import load_pipeline

    loaded, _info = load_pipeline(exported["model_dir"])
    return loaded
