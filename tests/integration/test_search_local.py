"""``worker local --opensearch embedded``: the bundled fixtures on a real OpenSearch node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def local(*args: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "worker", "local", "--json", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_the_embedded_node_gives_the_same_index_and_report_as_osmem():
    """Same fixtures, same configuration: the index (and every other part of the report)
    is the same on osmem-server and on the real node; only ``engines`` tells them apart."""
    default = local()
    embedded = local("--opensearch", "embedded")
    assert embedded["engines"]["search"]["name"] == "embedded OpenSearch node"
    assert embedded["engines"]["search"]["distribution"] == "opensearch"
    assert embedded["engines"]["search"]["version"].startswith("2.19.")
    assert default["engines"]["search"]["name"] == "osmem-server"
    assert "refreshes" in embedded["engines"]["search"]["refresh"]
    docs = embedded["search"]["orders"]
    assert len(docs) > 10
    assert docs == default["search"]["orders"]
    for report in (default, embedded):
        del report["engines"]["search"]
        if not report["engines"]:
            del report["engines"]
    assert embedded == default
