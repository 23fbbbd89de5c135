"""``worker local --engine kcl``: the same aggregates, index and archive counts as the direct run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

FIXTURES = "config/fixtures/orders.jsonl"


def local(*args: str) -> dict:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    for name in list(env):
        if name.startswith("WORKER__"):
            del env[name]
    done = subprocess.run(
        [sys.executable, "-m", "worker", "local", "--fixtures", FIXTURES, "--json", *args],
        env=env,
        capture_output=True,
        timeout=400,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report: dict = orjson.loads(done.stdout)
    return report


def test_kcl_engine_reports_what_the_direct_run_reports() -> None:
    direct = local()
    kcl = local("--engine", "kcl")
    assert direct["engines"] == {"stream": "direct"}
    assert kcl["engines"]["stream"].startswith("kcl 3.") and " + adapter 2." in kcl["engines"]["stream"]
    for key in ("records", "kinds", "changes", "deadletters", "aggregates", "search", "archive"):
        assert kcl[key] == direct[key], key
    ((shard, checkpoint),) = kcl["leases"].items()
    assert shard.startswith("shardId-") and checkpoint.isdigit()
