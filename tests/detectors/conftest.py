"""Fixtures of the detector tests."""

from __future__ import annotations

import pytest
from detector_testkit import Planted, build_planted


@pytest.fixture(scope="session")
def planted() -> Planted:
    """1000 claims (20 planted outliers) and entity frames with planted outliers, seed 0."""
    return build_planted(0)
