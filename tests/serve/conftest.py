"""Fixtures of the serve tests: the exported model of tests/export (built once per session)."""

from __future__ import annotations

import pytest

from tests.export.factory import build_exported_model


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Dataset, MLflow run and exported + registered model (see factory.build_exported_model).

    The tracking store is a sqlite file of its own (``exported["uri"]``); tests that resolve
    ``models:/`` URIs set ``MLFLOW_TRACKING_URI`` to it with monkeypatch.
    """
    return build_exported_model(tmp_path_factory.getbasetemp() / "medfraud_export_bundle")


@pytest.fixture(scope="session")
def pipeline(exported):
    from medfraud.export.model_io import load_pipeline

    loaded, _info = load_pipeline(exported["model_dir"])
    return loaded
