"""The real OpenSearch node (``opensearch-node/``): started once per test process.

Under xdist each worker process that runs a real-node test starts its own node
(about 10 s and a few hundred MB each): a node shared across processes would
need one of them to outlive the others, which xdist does not promise. Every
test gets its own index name and deletes what it created.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import requests

from worker.emulators import EmbeddedOpenSearch, start_opensearch

_names = itertools.count(1)


@pytest.fixture(scope="session")
def opensearch_node() -> Iterator[EmbeddedOpenSearch]:
    node = start_opensearch()
    yield node
    node.stop()


@pytest.fixture
def opensearch_url(opensearch_node: EmbeddedOpenSearch) -> str:
    return opensearch_node.url


@pytest.fixture
def real_index(opensearch_node: EmbeddedOpenSearch) -> Iterator[str]:
    """A fresh index name on the real node; the index and its template are deleted afterwards."""
    name = f"it-{os.getpid()}-{next(_names)}"
    yield name
    delete_index(opensearch_node.url, name)


def delete_index(url: str, name: str) -> None:
    requests.delete(f"{url}/{name}", timeout=30)
    requests.delete(f"{url}/_index_template/worker-{name}", timeout=30)
