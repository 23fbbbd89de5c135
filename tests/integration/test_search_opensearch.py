"""The search sink's randomized scenario against a real OpenSearch.

Runs whenever ``OPENSEARCH_URL`` is set (``https://admin:<password>@localhost:9200``);
``OPENSEARCH_CA`` names a CA file, ``OPENSEARCH_INSECURE=1`` skips TLS
verification (the demo certificates of a local container), and
``OPENSEARCH_SCHEDULES`` sets the count (default 60). Every index it creates
is named ``worker-it-<run>-<seed>`` and deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.functional.test_search_scenario import run_schedule
from worker.config import SearchSection
from worker.sinks.search.client import SearchClient, make_session

URL = os.environ["OPENSEARCH_URL"]  # tests/conftest.py only collects this tier when it is set

pytestmark = pytest.mark.integration

VERIFY: bool | str = os.environ.get("OPENSEARCH_CA") or os.environ.get("OPENSEARCH_INSECURE", "") not in ("1", "true")
SCHEDULES = int(os.environ.get("OPENSEARCH_SCHEDULES", "60"))


@pytest.fixture
def client() -> Iterator[SearchClient]:
    base, session = make_session(SearchSection(url=URL), "us-east-1")
    session.verify = VERIFY
    c = SearchClient(base, session)
    yield c
    c.close()


def test_random_schedules_leave_a_real_index_equal_to_the_table(client):
    run = uuid.uuid4().hex[:8]
    created: list[str] = []
    try:
        for seed in range(1, SCHEDULES + 1):
            index = f"worker-it-{run}-{seed}"
            created.append(index)
            try:
                run_schedule(seed, URL, index, verify=VERIFY)
            except AssertionError as exc:
                raise AssertionError(f"schedule seed {seed} (index {index}): {exc}") from exc
    finally:
        for index in created:
            client.request("DELETE", f"/{index}", expect=(200, 404))
