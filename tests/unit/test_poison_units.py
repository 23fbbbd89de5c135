"""The decoder's DynamoDB limits and the dead-letter writer's fallback, piece by piece."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import orjson
import pytest

from worker.attributes import decode_value, number_fault
from worker.deadletters import render_line
from worker.errors import RecordError

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "text",
    [
        "1e500",
        "-1e126",
        "1e-131",
        "1234567890123456789012345678901234567890",
        "0.000000000000000000000000000000000000001234567890123456789012345678901234567890",
    ],
)
def test_numbers_dynamodb_refuses_are_refused_at_decoding(text: str) -> None:
    with pytest.raises(RecordError) as err:
        decode_value({"N": text}, "img.total")
    assert err.value.field == "img.total"
    with pytest.raises(RecordError):
        decode_value({"NS": ["1", text]}, "img.set")


@pytest.mark.parametrize(
    "text",
    [
        "9.9999999999999999999999999999999999999E+125",
        "-1E-130",
        "12345678901234567890123456789012345678",
        "1E+40",
        "0",
        "1.000000000000000000000000000000000000000000",
    ],
)
def test_numbers_dynamodb_holds_are_kept_exactly(text: str) -> None:
    assert decode_value({"N": text}) == Decimal(text)
    assert number_fault(Decimal(text)) is None


def test_strings_must_be_valid_utf8() -> None:
    with pytest.raises(RecordError, match="UTF-8"):
        decode_value({"S": "a\ud800b"}, "img.s")
    with pytest.raises(RecordError, match="UTF-8"):
        decode_value({"M": {"k\udfff": {"S": "x"}}}, "img.m")
    assert decode_value({"S": "é✓"}) == "é✓"


def deep(depth: int) -> dict:
    value: dict = {"S": "x"}
    for _ in range(depth):
        value = {"M": {"a": value}}
    return value


@pytest.mark.parametrize("raw", [None, "text"])
def test_the_dead_letter_writer_falls_back_to_base64_for_what_json_cannot_hold(raw: str | None) -> None:
    payload = {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "7", "NewImage": {"d": deep(200)}}}
    text = json.dumps(payload)
    error = RecordError("too deep", where="shard-1/7", payload=payload, sink="search", raw=text if raw else None)
    line = orjson.loads(render_line(error, NOW))
    assert line["record"] is None
    assert json.loads(base64.b64decode(line["record_base64"])) == payload
    assert (line["shard_id"], line["sequence_number"], line["sink"]) == ("shard-1", "7", "search")


def test_the_dead_letter_writer_survives_lone_surrogates_anywhere() -> None:
    payload = {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "8", "Keys": {"k": {"S": "a\ud800"}}}}
    error = RecordError("bad \ud800 text", where="file:3", field="dynamodb.Keys.k\udc00", payload=payload)
    line = orjson.loads(render_line(error, NOW))
    assert line["record"] is None and line["record_base64"]
    assert "bad" in line["error"] and line["sequence_number"] == "8"
