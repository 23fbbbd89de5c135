"""Records in the shapes users already have: no ApproximateCreationDateTime, short sequence
numbers, an eventSourceARN that is not a stream ARN; the archive files them by arrival."""

from __future__ import annotations

import datetime as dt
import json

import orjson
import pytest

from worker.archive.layout import encode_line, parse_line
from worker.decode import decode
from worker.records import RawRecord


def sample(seq: str = "111", arn: str = "not an arn") -> dict:
    return {
        "eventID": "1",
        "eventName": "INSERT",
        "eventSourceARN": arn,
        "dynamodb": {
            "Keys": {"id": {"S": "a"}},
            "NewImage": {"id": {"S": "a"}, "n": {"N": "1"}},
            "SequenceNumber": seq,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


@pytest.mark.parametrize("shape", ["text", "mapping"])
def test_a_record_without_a_creation_time_gets_its_arrival_time(shape: str) -> None:
    payload = json.dumps(sample()).encode() if shape == "text" else sample()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    record = decode(RawRecord(payload, "event.json:1"))
    after = dt.datetime.now(dt.UTC)
    assert record.created_at_is_arrival
    assert before <= record.created_at <= after
    assert record.sequence == 111
    assert record.new_image == {"id": "a", "n": 1}


@pytest.mark.parametrize(
    ("arn", "table"),
    [
        ("not an arn", None),
        ("arn:aws:dynamodb:us-east-1:000000000000:table/Orders", "Orders"),
        ("arn:aws:dynamodb:us-west-2:account-id:table/Orders/stream/2026-01-01T00:00:00.000", "Orders"),
    ],
)
def test_any_event_source_arn_is_accepted(arn: str, table: str | None) -> None:
    assert decode(RawRecord(json.dumps(sample(arn=arn)), "x:1")).table == table


def test_a_record_with_a_creation_time_is_not_marked_as_arrival() -> None:
    rec = sample()
    rec["dynamodb"]["ApproximateCreationDateTime"] = 1_700_000_000
    record = decode(RawRecord(json.dumps(rec), "x:1"))
    assert not record.created_at_is_arrival
    assert record.created_at == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)


def test_the_archive_line_says_it_was_filed_by_arrival_and_replays_with_that_time() -> None:
    record = decode(RawRecord(json.dumps(sample()), "event.json:1", shard_id="shardId-1"))
    line = encode_line(record, "Orders")
    env = orjson.loads(line)
    assert env["filed_by"] == "arrival"
    assert dt.datetime.fromisoformat(env["arrived_at"]) == record.created_at
    assert "ApproximateCreationDateTime" not in env["record"]["dynamodb"]  # the record stays as delivered
    # Read back later, the record keeps the hour it was filed under, not the reading time.
    env["arrived_at"] = "2026-01-02T03:00:00+00:00"
    again = parse_line(orjson.dumps(env), "archive:1")
    assert again.created_at == dt.datetime(2026, 1, 2, 3, tzinfo=dt.UTC)
    assert again.shard_id == "shardId-1"
