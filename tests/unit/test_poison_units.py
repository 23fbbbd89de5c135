"""The decoder's DynamoDB limits and the dead-letter writer's fallback, piece by piece."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.attributes import decode_value, fit_add, fits, number_fault
from worker.canonical import EXACT
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


@settings(max_examples=500, deadline=None)
@given(
    digits=st.integers(min_value=0, max_value=10**45),
    exponent=st.integers(min_value=-180, max_value=140),
    sign=st.sampled_from([1, -1]),
)
def test_the_fast_fit_check_agrees_with_the_rules(digits: int, exponent: int, sign: int) -> None:
    d = Decimal((0 if sign > 0 else 1, tuple(int(c) for c in str(digits)), exponent))  # exact: no context
    assert fits(d) == (number_fault(d) is None), d


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1E-130", "9.99E+125", "1E+126", "1E-131", "0E-200"])
def test_the_fast_fit_check_at_the_edges(text: str) -> None:
    assert fits(Decimal(text)) == (number_fault(Decimal(text)) is None)


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(st.integers(0, 10**40), st.integers(-140, 130)),
    b=st.tuples(st.integers(0, 10**40), st.integers(-140, 130)),
    negative=st.booleans(),
)
def test_fit_add_raises_exactly_when_the_sum_does_not_fit(a, b, negative) -> None:
    x = Decimal((0, tuple(int(c) for c in str(a[0])), a[1]))
    y = Decimal((int(negative), tuple(int(c) for c in str(b[0])), b[1]))
    exact = EXACT.add(x, y)
    try:
        got = fit_add(x, y)
    except ArithmeticError:
        assert number_fault(exact) is not None
    else:
        assert number_fault(exact) is None and got == exact
