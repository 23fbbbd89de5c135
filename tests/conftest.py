"""Shared fixtures: real emulators (moto in server mode, osmem-server) on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from worker.emulators import FAKE_CREDENTIALS, Moto, start_moto

for _k, _v in FAKE_CREDENTIALS.items():
    os.environ.setdefault(_k, _v)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")


# The integration tier needs a real external server; it is collected only when one is named.
INTEGRATION_SERVERS = ("OPENSEARCH_URL",)
# The KCL tier (integration/kcl) starts its own servers and always runs.
collect_ignore_glob = [] if any(os.environ.get(v) for v in INTEGRATION_SERVERS) else ["integration/test_search_*"]


def pytest_report_header() -> str:
    if collect_ignore_glob:
        return "integration tier: not collected (set OPENSEARCH_URL to run it against a real cluster)"
    return "integration tier: collected (OPENSEARCH_URL is set)"


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
