"""Backfill scan throughput and read capacity against a moto DynamoDB server.

A table of ``--items`` items of ~``--item-bytes`` bytes (loaded before its stream is
enabled) is read by:

* ``plain scan`` (the baseline): one sequential Scan, pages of ``--page-items``,
  counting items, nothing kept;
* ``backfill scan, N segments``: :meth:`Backfill.scan` (parallel segments, each page
  spooled and fsync'ed, the state file rewritten per page), for N in ``--segments``;
* ``backfill, all phases``: scan, change index (the stream read once), and the
  snapshot applied through the real :class:`~worker.pipeline.Pipeline` (decode,
  diff) into a counting sink (a fake that counts and drops, so the figure is the
  backfill's own cost, not a sink's).

Each row: wall seconds, items per second, the ratio to the plain scan, and the read
capacity moto reports (``ReturnConsumedCapacity=TOTAL``) next to what DynamoDB would
charge (per page: ``ceil(bytes / 4 KB)``, halved for eventually consistent reads).
Against moto the time is dominated by its HTTP handling on the same 2 cores:
read the ratios, not the absolute figures. No target is set.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import orjson

from bench.archive import CountingSink
from worker.emulators import FAKE_CREDENTIALS, start_moto
from worker.pipeline import Pipeline
from worker.sources.backfill import Backfill, ScanOptions
from worker.testing import MemoryDeadLetters

TABLE = "BenchOrders"


def item(rng: random.Random, i: int, size: int) -> dict[str, Any]:
    return {
        "order_id": {"S": f"o-{i:08d}"},
        "status": {"S": rng.choice(("new", "paid", "shipped"))},
        "total": {"N": str(rng.randint(1, 10**6) / 100)},
        "note": {"S": "x" * max(0, size - 80)},
    }


def load(ddb: Any, n: int, size: int) -> int:
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    rng = random.Random(1)
    total = 0
    for start in range(0, n, 25):
        batch = [item(rng, i, size) for i in range(start, min(n, start + 25))]
        total += sum(len(orjson.dumps(x)) for x in batch)
        ddb.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": x}} for x in batch]})
    ddb.update_table(
        TableName=TABLE, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    return total


def dynamodb_rcu(pages: list[int]) -> float:
    """What DynamoDB charges an eventually consistent scan: per page, ceil(bytes / 4 KB) / 2."""
    return sum(math.ceil(b / 4096) for b in pages) / 2


def plain_scan(ddb: Any, page_items: int) -> tuple[float, int, float, list[int]]:
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"TableName": TABLE, "Limit": page_items, "ReturnConsumedCapacity": "TOTAL"}
    n, rcu, pages = 0, 0.0, []
    while True:
        page = ddb.scan(**kwargs)
        n += len(page["Items"])
        rcu += page["ConsumedCapacity"]["CapacityUnits"]
        pages.append(sum(len(orjson.dumps(x)) for x in page["Items"]))
        if "LastEvaluatedKey" not in page:
            return time.perf_counter() - started, n, rcu, pages
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench backfill", description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--item-bytes", type=int, default=1000)
    p.add_argument("--page-items", type=int, default=500)
    p.add_argument("--segments", type=int, nargs="+", default=[1, 4])
    args = p.parse_args(argv)
    for k, v in FAKE_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    moto = start_moto()
    try:
        kw = {"region_name": "us-east-1", "endpoint_url": moto.url}
        ddb, streams = boto3.client("dynamodb", **kw), boto3.client("dynamodbstreams", **kw)
        size = load(ddb, args.items, args.item_bytes)
        print(f"table: {args.items} items, {size / args.items:.0f} B each (DynamoDB JSON), pages of {args.page_items}")
        base, n, rcu, pages = plain_scan(ddb, args.page_items)
        real = dynamodb_rcu(pages)
        print(f"{'stack':<28} {'seconds':>8} {'items/s':>9} {'ratio':>6} {'moto RCU':>9} {'DynamoDB RCU':>13}")
        print(f"{'plain scan':<28} {base:8.2f} {n / base:9.0f} {1.0:6.2f} {rcu:9.1f} {real:13.1f}")
        for segments in args.segments:
            with tempfile.TemporaryDirectory() as tmp:
                b = Backfill(ddb, streams, TABLE, Path(tmp), ScanOptions(segments, args.page_items, settle_seconds=0))
                b.start()
                started = time.perf_counter()
                b.scan()
                took = time.perf_counter() - started
                assert b.progress is not None and b.progress.scanned == args.items
                label = f"backfill scan, {segments} segment{'s' if segments > 1 else ''}"
                print(
                    f"{label:<28} {took:8.2f} {args.items / took:9.0f} {base / took:6.2f}"
                    f" {b.progress.consumed_rcu:9.1f} {real:13.1f}"
                )
        segments = max(args.segments)
        with tempfile.TemporaryDirectory() as tmp:
            b = Backfill(ddb, streams, TABLE, Path(tmp), ScanOptions(segments, args.page_items, settle_seconds=0))
            b.start()
            sink = CountingSink()
            started = time.perf_counter()
            b.run(Pipeline([sink], MemoryDeadLetters()))
            took = time.perf_counter() - started
            assert sink.flushed == args.items, sink.flushed
            label = f"backfill, all phases ({segments} seg)"
            print(
                f"{label:<28} {took:8.2f} {args.items / took:9.0f} {base / took:6.2f}"
                f" {b.progress.consumed_rcu if b.progress else 0:9.1f} {real:13.1f}"
            )
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
