"""Shared fixtures: real emulators (moto in server mode, osmem-server) on loopback.

The real OpenSearch node is started by ``tests/integration/conftest.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from worker.emulators import FAKE_CREDENTIALS, Moto, start_moto

for _k, _v in FAKE_CREDENTIALS.items():
    os.environ.setdefault(_k, _v)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """One moto server (a child process) per test session/worker."""
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def moto_url(moto_server: Moto) -> Iterator[str]:
    """A moto endpoint with no state left from earlier tests."""
    moto_server.reset()
    yield moto_server.url
