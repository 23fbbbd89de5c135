"""A development poller over the DynamoDB Streams API (GetRecords): fixture recording
and local experiments. Production reads through KCL (``worker kcl``), which owns
leases and checkpoints; this poller has neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    """Every shard, parents before children."""
    out: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": arn}
    while True:
        desc = streams.describe_stream(**kwargs)["StreamDescription"]
        out.extend(desc.get("Shards", []))
        last = desc.get("LastEvaluatedShardId")
        if not last:
            break
        kwargs["ExclusiveStartShardId"] = last
    ids = {s["ShardId"] for s in out}
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()

    def visit(s: dict[str, Any]) -> None:
        if s["ShardId"] in done:
            return
        parent = s.get("ParentShardId")
        if parent in ids and parent not in done:
            visit(next(p for p in out if p["ShardId"] == parent))
        done.add(s["ShardId"])
        ordered.append(s)

    for s in out:
        visit(s)
    return ordered


def poll(streams: Any, arn: str, *, limit: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record now in the stream, as ``(shard_id, record as boto3 returns it)``.

    Reads each shard from TRIM_HORIZON until it returns no more records.
    """
    for shard in shards(streams, arn):
        sid = shard["ShardId"]
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")
        iterator = it.get("ShardIterator")
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=limit)
            records = page.get("Records", [])
            for rec in records:
                yield sid, rec
            if not records:
                break
            iterator = page.get("NextShardIterator")
