"""FAKE shard rollover for moto's DynamoDB Streams: a moto server whose stream closes its shard
every ``FAKE_ROLLOVER_EVERY`` records and opens a child shard (``ParentShardId`` = the closed one).

moto (5.x) gives a table one stream shard that never closes, so KCL's shard end never happens on
it. This test fake patches moto's in-memory stream model before starting moto's own server:

* a shard that reaches the record count is closed (``EndingSequenceNumber``) and a child opens,
  continuing the sequence numbers, as DynamoDB does when it rolls a shard over;
* DescribeStream lists the closed shards and the open one, and honours
  ``ShardFilter {Type: CHILD_SHARDS, ShardId}`` (what the adapter asks at a shard end);
* GetShardIterator finds any of the table's shards; GetRecords on a closed shard, once past its
  last record, returns no ``NextShardIterator`` (the shard end, as DynamoDB Streams signals it).

Usage: ``FAKE_ROLLOVER_EVERY=100 python fake_rollover_moto.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from moto.dynamodb.models.table import StreamShard, Table
from moto.dynamodbstreams import models, responses
from moto.server import main

EVERY = int(os.environ.get("FAKE_ROLLOVER_EVERY", "100"))

_original_init = StreamShard.__init__
_original_add = StreamShard.add


def _init(self: Any, account_id: str, table: Table) -> None:
    _original_init(self, account_id, table)
    self.parent_id = None
    self.ending_sequence_number = None


def _shards(table: Table) -> list[Any]:
    return [*getattr(table, "fake_closed_shards", []), table.stream_shard]


def _add(self: Any, old: Any, new: Any) -> None:
    _original_add(self, old, new)
    if len(self.items) >= EVERY and self.ending_sequence_number is None:
        table = self.table
        self.ending_sequence_number = self.starting_sequence_number + len(self.items) - 1
        child = StreamShard(self.account_id, table)
        n = len(_shards(table))
        child.id = f"shardId-00000001541626099285-c{n:07d}"
        child.parent_id = self.id
        child.starting_sequence_number = self.ending_sequence_number + 1
        table.fake_closed_shards = [*getattr(table, "fake_closed_shards", []), self]
        table.stream_shard = child


def _to_json(self: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ShardId": self.id,
        "SequenceNumberRange": {"StartingSequenceNumber": str(self.starting_sequence_number)},
    }
    if self.ending_sequence_number is not None:
        out["SequenceNumberRange"]["EndingSequenceNumber"] = str(self.ending_sequence_number)
    if self.parent_id:
        out["ParentShardId"] = self.parent_id
    return out


def _describe_stream(self: Any, arn: str, shard_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    table = self._get_table_from_arn(arn)
    shards = [s.to_json() for s in _shards(table)]
    if shard_filter and shard_filter.get("Type") == "CHILD_SHARDS":
        shards = [s for s in shards if s.get("ParentShardId") == shard_filter.get("ShardId")]
    return {
        "StreamArn": arn,
        "StreamLabel": table.latest_stream_label,
        "StreamStatus": "ENABLED",
        "StreamViewType": table.stream_specification["StreamViewType"],
        "CreationRequestDateTime": table.stream_shard.created_on,
        "TableName": table.name,
        "KeySchema": table.schema,
        "Shards": shards,
    }


def _describe_stream_response(self: Any) -> Any:
    arn = self._get_param("StreamArn")
    return responses.ActionResult(
        {"StreamDescription": self.backend.describe_stream(arn, self._get_param("ShardFilter"))}
    )


def _get_shard_iterator(
    self: Any, arn: str, shard_id: str, shard_iterator_type: str, sequence_number: str | None = None
) -> Any:
    table = self._get_table_from_arn(arn)
    (shard,) = [s for s in _shards(table) if s.id == shard_id]
    it = models.ShardIterator(self, shard, shard_iterator_type, sequence_number)  # type: ignore[arg-type]
    self.shard_iterators[it.arn] = it
    return it


_original_get = models.ShardIterator.get


def _get(self: Any, limit: int = 1000) -> dict[str, Any]:
    out = _original_get(self, limit)
    shard = self.stream_shard
    if shard.ending_sequence_number is not None:
        nxt = self.streams_backend.shard_iterators[out["NextShardIterator"]]
        if nxt.sequence_number > shard.ending_sequence_number:
            del out["NextShardIterator"]  # read to the end of a closed shard
    return out


StreamShard.__init__ = _init  # type: ignore[method-assign]
StreamShard.add = _add  # type: ignore[method-assign]
StreamShard.to_json = _to_json  # type: ignore[method-assign]
models.DynamoDBStreamsBackend.describe_stream = _describe_stream  # type: ignore[method-assign]
models.DynamoDBStreamsBackend.get_shard_iterator = _get_shard_iterator  # type: ignore[method-assign]
models.ShardIterator.get = _get  # type: ignore[method-assign]
responses.DynamoDBStreamsHandler.describe_stream = _describe_stream_response  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
