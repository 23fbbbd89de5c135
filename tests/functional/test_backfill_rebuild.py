"""The archive keeps the snapshot: ``worker replay --rebuild`` starts from the latest snapshot at
or before the range and rebuilds the aggregates from the archive alone (no stream needed, so
beyond its 24 hours), even after the stream was replaced and backfilled again."""

from __future__ import annotations

import json
import random
import time

import orjson
import pytest

from tests.functional.archive_helpers import restore_logging  # noqa: F401 (a fixture)
from tests.functional.backfill_helpers import (
    LiveConsumer,
    Writer,
    create_source,
    final_items,
    random_item,
    write_config,
)
from worker import cli, config
from worker.archive import list_all, parse_line, read_object
from worker.attributes import decode_item
from worker.aws import client
from worker.sinks.aggregates import create as create_aggregates
from worker.sinks.aggregates.spec import recompute
from worker.sources.backfill import Backfill, ScanOptions

pytestmark = pytest.mark.usefixtures("restore_logging")


def backfill(cfg, tmp):
    from worker.app import build_pipeline

    b = Backfill(
        client(cfg, "dynamodb"),
        client(cfg, "dynamodbstreams"),
        cfg.worker.table,
        tmp / "state",
        ScanOptions(segments=2, page_items=7, settle_seconds=0),
    )
    b.start()
    return b, build_pipeline(cfg, provision=True)


def rebuild(capsys, path, into, *extra):
    rc = cli.main(["replay", "--config", str(path), "--rebuild", "all", "--into", into, "--json", *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def expected(cfg):
    items = [decode_item(i, "Item") for i in final_items(cfg)]
    return {a.name: recompute(a, items) for a in cfg.aggregates}


def rebuilt(path, table):
    return create_aggregates(
        config.load(path, env={"WORKER__AGGREGATES__0__TABLE": table, "WORKER__AGGREGATES__1__TABLE": table})
    ).report()


def test_rebuild_from_the_archived_snapshot_equals_the_final_table(moto_url, osmem_url, tmp_path, capsys):
    path = write_config(tmp_path / "w.toml", moto_url, osmem_url, tmp_path)
    cfg = config.load(path, env={})
    rng = random.Random(3)
    keys = [f"o-{i:04d}" for i in range(40)]
    ddb = create_source(cfg, [random_item(rng, k) for k in keys])
    writer = Writer(ddb, cfg.worker.table, rng, keys)
    live = LiveConsumer(cfg)

    # Stream 1: backfill racing writes, live consumption into every sink (the archive too).
    b, pipeline = backfill(cfg, tmp_path / "one")
    while b.scan_page(0) | b.scan_page(1):
        writer.write()
        live.consume(3)
    b.close_index()
    b.apply(pipeline)
    for _ in range(10):
        writer.write()
    live.drain()

    # The archive holds the snapshot, marked, with its position.
    s3 = client(cfg, "s3")
    snaps = [o for o in list_all(s3, "archive", "changes/") if o.name.stream.startswith("snapshot-")]
    assert snaps
    loaded = read_object(s3, "archive", snaps[0])
    marker = orjson.loads(loaded.entries[0][2])["record"]["snapshot"]
    assert marker["position"] == "trim-horizon" and marker["stream"] == b.snapshot.stream_arn
    assert parse_line(loaded.entries[0][2], "x").created_at.timestamp() == b.snapshot.taken

    want = expected(cfg)
    summary = rebuild(capsys, path, "Rebuilt1")
    assert summary["snapshot"] == b.snapshot.shard
    assert rebuilt(path, "Rebuilt1") == want

    # Beyond the stream's retention: the source table and its stream are gone, the archive suffices.
    ddb.delete_table(TableName=cfg.worker.table)
    assert rebuild(capsys, path, "R1b")["snapshot"] == b.snapshot.shard
    assert rebuilt(path, "R1b") == want

    # A new table of the same name, a new stream, a second backfill: the rebuild starts from the
    # latest snapshot and leaves the older snapshot and the older stream's records out. (No live
    # writes this time: moto gives every stream of a table the same shard id and sequence numbers,
    # so records of the two streams would collide in the archive; DynamoDB's shard ids differ.)
    time.sleep(1.1)  # the old stream's records lie in earlier seconds than the new one's position
    create_source(cfg, [random_item(rng, f"n-{i:04d}") for i in range(30)])
    b2, pipeline2 = backfill(cfg, tmp_path / "two")
    assert b2.snapshot.stream_arn != b.snapshot.stream_arn
    while b2.scan_page(0) | b2.scan_page(1):
        pass
    b2.close_index()
    b2.apply(pipeline2)

    want = expected(cfg)
    latest = rebuild(capsys, path, "Rebuilt2")
    assert latest["snapshot"] == b2.snapshot.shard
    assert rebuilt(path, "Rebuilt2") == want
    # A range starting before the second snapshot starts from the first one.
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(b.snapshot.taken))
    assert rebuild(capsys, path, "Rebuilt3", "--since", since)["snapshot"] == b.snapshot.shard
