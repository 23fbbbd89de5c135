"""A source table on moto with items that predate its stream, random live writes, a live
stream consumer, and the check that every sink equals a recomputation from the final table."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from worker import config
from worker.app import build_pipeline
from worker.attributes import decode_item
from worker.aws import client
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.sinks import aggregates, search
from worker.sinks.aggregates.spec import recompute
from worker.sinks.search.docs import Projection, doc_id

STATUSES = ("new", "paid", "shipped")
CITIES = ("Paris", "Lyon", "Nice")


def write_config(path: Path, moto: str, osmem: str, tmp: Path, *, stats: str = "Stats", index: str = "orders") -> Path:
    path.write_text(
        f"""
[worker]
table = "Orders"
data_dir = "{tmp / "state"}"
log_format = "json"
log_level = "warning"
[aws]
endpoint_url = "{moto}"
[pipeline]
max_batch_records = 7
retry_base_seconds = 0.0
retry_max_seconds = 0.0
[deadletter]
url = "{tmp / "dead"}"
[local]
state_dir = "{tmp / "state"}"
[[aggregates]]
name = "by_status"
table = "{stats}"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}
[[aggregates]]
name = "web_by_city"
table = "{stats}"
group_by = ["ship.city"]
where = {{ channel = "web" }}
metrics = {{ orders = "count", revenue = "sum(total)" }}
[search]
url = "{osmem}"
index = "{index}"
[archive]
bucket = "archive"
prefix = "changes/"
max_records = 25
"""
    )
    return path


def random_item(rng: random.Random, key: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "order_id": {"S": key},
        "status": {"S": rng.choice(STATUSES)},
        "total": {"N": str(Decimal(rng.randint(1, 99999)) / 100)},
        "channel": {"S": rng.choice(("web", "shop"))},
        "ship": {"M": {"city": {"S": rng.choice(CITIES)}}},
    }
    if rng.random() < 0.3:
        del item["ship"]
    return item


def create_source(cfg: config.Config, items: list[dict[str, Any]], *, stream: bool = True) -> Any:
    """The source table with ``items`` loaded *before* its stream is enabled."""
    ddb = client(cfg, "dynamodb")
    ddb.create_table(
        TableName=cfg.worker.table,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for item in items:
        ddb.put_item(TableName=cfg.worker.table, Item=item)
    if stream:
        ddb.update_table(
            TableName=cfg.worker.table,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
    return ddb


class Writer:
    """Random puts (new and existing keys), updates, deletes and re-puts of deleted keys."""

    def __init__(self, ddb: Any, table: str, rng: random.Random, keys: list[str]) -> None:
        self.ddb, self.table, self.rng = ddb, table, rng
        self.live = list(keys)
        self.gone: list[str] = []
        self.next = len(keys)
        self.counts = {"put-new": 0, "put-over": 0, "update": 0, "delete": 0, "re-put": 0}

    def write(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.2 or not self.live:
            key = f"o-{self.next:05d}"
            self.next += 1
            self._put(key, "put-new")
        elif roll < 0.4:
            self._put(rng.choice(self.live), "put-over")
        elif roll < 0.65:
            key = rng.choice(self.live)
            self.ddb.update_item(
                TableName=self.table,
                Key={"order_id": {"S": key}},
                UpdateExpression="SET #s = :s, #t = :t",
                ExpressionAttributeNames={"#s": "status", "#t": "total"},
                ExpressionAttributeValues={":s": {"S": rng.choice(STATUSES)}, ":t": {"N": str(rng.randint(1, 500))}},
            )
            self.counts["update"] += 1
        elif roll < 0.85:
            key = rng.choice(self.live)
            self.ddb.delete_item(TableName=self.table, Key={"order_id": {"S": key}})
            self.live.remove(key)
            self.gone.append(key)
            self.counts["delete"] += 1
        elif self.gone:
            key = self.gone.pop(rng.randrange(len(self.gone)))
            self._put(key, "re-put")
        else:
            self._put(rng.choice(self.live), "put-over")

    def _put(self, key: str, what: str) -> None:
        # PutItem only: moto's UpdateItem that creates an item emits two INSERTs.
        self.ddb.put_item(TableName=self.table, Item=random_item(self.rng, key))
        if key not in self.live:
            self.live.append(key)
        self.counts[what] += 1


class LiveConsumer:
    """The live side: the stream from its beginning, a few records at a time, through its own pipeline."""

    def __init__(self, cfg: config.Config) -> None:
        self.ddb = client(cfg, "dynamodb")
        self.streams = client(cfg, "dynamodbstreams")
        self.pipeline: Pipeline = build_pipeline(cfg, provision=True)
        arn = self.ddb.describe_table(TableName=cfg.worker.table)["Table"]["LatestStreamArn"]
        shard = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self.shard = shard
        self.iterator = self.streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        self.records = 0

    def consume(self, limit: int) -> int:
        page = self.streams.get_records(ShardIterator=self.iterator, Limit=limit)
        self.iterator = page["NextShardIterator"]
        batch = [RawRecord(r, f"{self.shard}/{r['dynamodb']['SequenceNumber']}", self.shard) for r in page["Records"]]
        self.pipeline.process(batch)
        self.records += len(batch)
        return len(batch)

    def drain(self) -> None:
        while self.consume(100):
            pass


def final_items(cfg: config.Config) -> list[dict[str, Any]]:
    ddb = client(cfg, "dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": cfg.worker.table, "ConsistentRead": True}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def assert_sinks_equal_table(cfg: config.Config) -> None:
    """Aggregates and index equal a recomputation from the final table (read independently)."""
    items = [decode_item(i, "Item") for i in final_items(cfg)]
    report = aggregates.create(cfg).report()
    for section in cfg.aggregates:
        assert report[section.name] == recompute(section, items), section.name
    # An independent check of the first aggregate: plain counts and exact sums per status.
    expected: dict[str, tuple[int, Decimal]] = {}
    for item in items:
        n, s = expected.get(item["status"], (0, Decimal(0)))
        expected[item["status"]] = (n + 1, s + Decimal(str(item["total"])))
    got = {
        r["group"]["status"]: (int(r["metrics"]["orders"]), Decimal(str(r["metrics"]["revenue"])))
        for r in report["by_status"]
    }
    assert got == expected
    assert cfg.search is not None
    projection = Projection(exclude=tuple(cfg.search.exclude))
    docs = search.create(cfg).report()[cfg.search.index]
    want = {
        doc_id({"order_id": item["order_id"]}): orjson.loads(projection.dumps(projection.project(item)))
        for item in items
    }
    assert docs == want
