"""The README's main job: `worker local` over the bundled fixtures, every sink, embedded emulators.

Each sink's reported state must equal what a recomputation from the fixture's
final items says it should be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.worker_cli import run_worker
from worker import config
from worker.decode import decode
from worker.records import EventName
from worker.sinks.aggregates.spec import recompute
from worker.sinks.search.docs import Projection, doc_id
from worker.sources import fixtures

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "config" / "fixtures" / "orders.jsonl"


def final_items() -> tuple[dict[str, dict], int]:
    items: dict[str, dict] = {}
    count = 0
    for raw in fixtures.read([BUNDLED]):
        rec = decode(raw)
        count += 1
        key = json.dumps(rec.keys, sort_keys=True, default=str)
        if rec.event_name is EventName.REMOVE:
            items.pop(key, None)
        else:
            assert rec.new_image is not None
            items[key] = rec.new_image
    return items, count


def test_local_run_over_bundled_fixtures_matches_a_recomputation(tmp_path: Path) -> None:
    run = run_worker(
        "local",
        "--json",
        "--config",
        "config/local.toml",
        extra_env={"WORKER__DEADLETTER__URL": str(tmp_path / "dead")},
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    items, count = final_items()
    cfg = config.load(ROOT / "config" / "local.toml", env={})

    assert report["records"] == count == sum(report["kinds"].values())
    assert report["deadletters"] == 0

    assert set(report["aggregates"]) == {a.name for a in cfg.aggregates}
    for section in cfg.aggregates:
        assert report["aggregates"][section.name] == recompute(section, items.values()), section.name

    assert cfg.search is not None
    projection = Projection(exclude=tuple(cfg.search.exclude))
    expected_docs = {
        doc_id({"order_id": item["order_id"]}): orjson.loads(projection.dumps(projection.project(item)))
        for item in items.values()
    }
    assert report["search"] == {cfg.search.index: expected_docs}

    assert report["archive"]["records"] == count
    assert report["archive"]["objects"] >= 1


def test_human_summary_names_every_sink() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WORKER_CONFIG"}
    run = subprocess.run(
        [sys.executable, "-m", "worker", "--config", "config/local.toml", "local"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "osmem-server" not in run.stderr  # the emulator's own lines stay out of the output
    out = run.stdout
    for word in ("records: INSERT", "dead letters: 0", "aggregates:", "orders_by_status", "index orders", "archive:"):
        assert word in out
