"""Fixtures of the KCL integration tier: one :class:`Rig` (its own moto, osmem and daemons) per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kcl.rig import Rig

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # never probe instance metadata, here or in children


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()
