"""``worker local --table-items``: items that predate the stream are backfilled while the fixtures'
writes race the scan; every sink ends equal to the final table, recomputed here from the items
file and the fixtures independently."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import orjson

from tests.worker_cli import run_worker
from worker import config
from worker.attributes import decode_item
from worker.decode import decode
from worker.records import EventName
from worker.sinks.aggregates.spec import recompute
from worker.sinks.search.docs import Projection, doc_id
from worker.sources import fixtures

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "config" / "fixtures" / "orders.jsonl"


def items_file(path: Path) -> dict[str, dict]:
    """Items whose keys partly collide with the fixtures' (o-0000...), in both accepted shapes."""
    rng = random.Random(9)
    items = {}
    with open(path, "wb") as fh:
        for i, key in enumerate([f"o-{i:04d}" for i in range(0, 60, 2)] + [f"p-{i:04d}" for i in range(90)]):
            item = {
                "order_id": {"S": key},
                "status": {"S": rng.choice(["pending", "paid", "shipped"])},
                "channel": {"S": rng.choice(["web", "store"])},
                "total": {"N": str(rng.randint(100, 99999) / 100)},
                "ship": {"M": {"city": {"S": rng.choice(["Paris", "Lyon"])}}},
            }
            fh.write(orjson.dumps({"Item": item} if i % 3 == 0 else item) + b"\n")
            items[key] = decode_item(item, "Item")
    return items


def final_table(items: dict[str, dict]) -> dict[str, dict]:
    table = dict(items)
    for raw in fixtures.read([BUNDLED]):
        rec = decode(raw)
        key = rec.keys["order_id"]
        if rec.event_name is EventName.REMOVE:
            table.pop(key, None)
        else:
            assert rec.new_image is not None
            table[key] = rec.new_image
    return table


def local(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return run_worker(
        "local", "--config", "config/local.toml", *args, extra_env={"WORKER__DEADLETTER__URL": str(tmp / "dead")}
    )


def test_table_items_are_backfilled_and_every_sink_equals_the_final_table(tmp_path: Path) -> None:
    items = items_file(tmp_path / "items.jsonl")
    run = local("--table-items", str(tmp_path / "items.jsonl"), "--json", tmp=tmp_path)
    assert run.returncode == 0, run.stderr
    assert_every_sink_equals_the_final_table(json.loads(run.stdout), items)


def assert_every_sink_equals_the_final_table(report: dict, items: dict[str, dict]) -> None:
    """The report of a `--table-items` run with the bundled fixtures (any engine) against the table
    recomputed here from the items and the fixtures."""
    table = final_table(items)
    cfg = config.load(ROOT / "config" / "local.toml", env={})

    assert report["deadletters"] == 0
    assert report["backfill"]["items_loaded"] == len(items) == report["backfill"]["scanned"]
    assert report["backfill"]["final_items"] == len(table)
    assert report["backfill"]["changed_during_scan"] > 0  # the fixtures' writes raced the scan
    for section in cfg.aggregates:
        assert report["aggregates"][section.name] == recompute(section, table.values()), section.name
    assert cfg.search is not None
    projection = Projection(exclude=tuple(cfg.search.exclude))
    want = {
        doc_id({"order_id": item["order_id"]}): orjson.loads(projection.dumps(projection.project(item)))
        for item in table.values()
    }
    assert report["search"] == {cfg.search.index: want}


def test_a_bad_items_line_names_its_place(tmp_path: Path) -> None:
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"order_id": {"S": "a"}}\n{"order_id": {"Q": 1}}\n')
    run = local("--table-items", str(bad), tmp=tmp_path)
    assert run.returncode == 1
    assert f"{bad}:2" in run.stderr and "Traceback" not in run.stderr
