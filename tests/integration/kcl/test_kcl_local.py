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
        [
            sys.executable,
            "-m",
            "worker",
            "local",
            "--config",
            "config/local.toml",
            "--fixtures",
            FIXTURES,
            "--json",
            *args,
        ],
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
    assert direct["engines"]["stream"] == "direct"
    assert kcl["engines"]["stream"].startswith("kcl 3.") and " + adapter 2." in kcl["engines"]["stream"]
    for key in ("records", "kinds", "changes", "deadletters", "aggregates", "search", "archive"):
        assert kcl[key] == direct[key], key
    ((shard, checkpoint),) = kcl["leases"].items()
    assert shard.startswith("shardId-") and checkpoint.isdigit()


def test_kcl_engine_with_table_items_races_the_scan_and_ends_equal_to_the_table(tmp_path: Path) -> None:
    """`--table-items` under `--engine kcl`: the daemon consumes the stream while the fixtures'
    writes race the backfill's scan; every sink ends equal to the final table."""
    from tests.functional.test_local_table_items import assert_every_sink_equals_the_final_table, items_file

    items = items_file(tmp_path / "items.jsonl")
    report = local("--engine", "kcl", "--table-items", str(tmp_path / "items.jsonl"))
    assert report["engines"]["stream"].startswith("kcl 3.")
    assert_every_sink_equals_the_final_table(report, items)
