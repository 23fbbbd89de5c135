"""Aggregates rows: marks, planned writes and error mapping (pure)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from worker.aws import classify_dynamodb
from worker.canonical import seq_text
from worker.errors import Action, FatalError, RetryableError
from worker.sinks.aggregates.store import RowState, RowWrite, hwm_entry, parse_entry, state_of

SEQS = [10**20 + 1, 10**20 + 9, 10**21, 49999999999999999999999999999999999999, 10**40 - 1]


def test_marks_order_like_sequences_beyond_64_bits() -> None:
    for i, a in enumerate(SEQS):
        for b in SEQS[i + 1 :]:
            assert hwm_entry(a, 1) < seq_text(b)  # applied below first: the write may go
            assert not hwm_entry(b, 1) < seq_text(a)  # applied beyond: refused
        assert not hwm_entry(a, 1) < seq_text(a)  # first already applied: refused
        assert parse_entry(hwm_entry(a, 1763780400)) == (a, 1763780400.0)


def test_state_from_an_item_and_stale_marks() -> None:
    state = state_of(
        {"pk": {"S": "a"}, "hwm": {"M": {"s1": {"S": hwm_entry(5, 1000)}, "s2": {"S": hwm_entry(7, 9000)}}}}
    )
    assert state.exists and state.applied("s1") == 5 and state.applied("s3") is None
    assert state.stale(now=10_000, keep_seconds=5000, keep=["s9"]) == [("s1", hwm_entry(5, 1000))]
    assert state.stale(now=10_000, keep_seconds=5000, keep=["s1"]) == []
    assert not state_of(None).exists


def test_new_row_write_sets_everything_under_not_exists() -> None:
    row = RowWrite("T", "agg", '["paid"]', {"status": "paid"}, [("count", D(1)), ("rev", D(0))], {"s1": (5, 9)}, True)
    req = row.request(now=1000)
    assert req["ConditionExpression"] == "attribute_not_exists(#pk)"
    assert req["ExpressionAttributeValues"][":hwm"] == {"M": {"s1": {"S": hwm_entry(9, 1000)}}}
    assert req["ExpressionAttributeValues"][":grp"] == {"M": {"status": {"S": "paid"}}}
    assert "#a1 :a1" in req["UpdateExpression"]  # zero sums are created too, so the row has every metric


def test_existing_row_write_is_conditional_per_shard_and_prunes() -> None:
    row = RowWrite(
        "T",
        "agg",
        "[1]",
        {},
        [("count", D(0)), ("rev", D("-2.50"))],
        {"s1": (5, 9), "s2": (3, 3)},
        False,
        [("old", "x@1")],
    )
    req = row.request(now=1000)
    assert req["ConditionExpression"] == (
        "attribute_exists(#hwm) AND (attribute_not_exists(#hwm.#s0) OR #hwm.#s0 < :f0)"
        " AND (attribute_not_exists(#hwm.#s1) OR #hwm.#s1 < :f1)"
        " AND (attribute_not_exists(#hwm.#x0) OR #hwm.#x0 = :x0)"  # pruned only if still as read
    )
    values = req["ExpressionAttributeValues"]
    assert values[":f0"] == {"S": seq_text(5)} and values[":s0"] == {"S": hwm_entry(9, 1000)}
    assert values[":a1"] == {"N": "-2.5"} and ":a0" not in values  # a zero delta is not written
    assert req["UpdateExpression"].endswith("REMOVE #hwm.#x0")
    assert req["ExpressionAttributeNames"]["#x0"] == "old" and values[":x0"] == {"S": "x@1"}


def client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Op")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("ProvisionedThroughputExceededException"), RetryableError),
        (client_error("ThrottlingException"), RetryableError),
        (client_error("InternalServerError", 500), RetryableError),
        (client_error("Whatever", 503), RetryableError),
        (EndpointConnectionError(endpoint_url="http://x"), RetryableError),
        (ReadTimeoutError(endpoint_url="http://x"), RetryableError),
        (client_error("ResourceNotFoundException"), FatalError),
        (client_error("ValidationException"), FatalError),
    ],
)
def test_classify(exc: Exception, kind: type) -> None:
    err = classify_dynamodb(exc, "UpdateItem")
    assert type(err) is kind
    assert err.action is (Action.RETRY if kind is RetryableError else Action.STOP)  # type: ignore[attr-defined]


def test_row_state_defaults() -> None:
    assert RowState(False).applied("s") is None


def test_access_denied_stops_in_one_line_in_dynamodb_and_in_a_403_shape() -> None:
    # DynamoDB's own answer (HTTP 400, JSON): the shape botocore builds from it.
    dynamodb = ClientError(
        {
            "Error": {
                "Code": "AccessDeniedException",
                "Message": "User: arn:aws:iam::123456789012:user/w is not authorized to perform: "
                "dynamodb:UpdateItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/Stats",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "UpdateItem",
    )
    # A 403 with a multi-line XML body (an endpoint policy or proxy; moto's IAM mode answers so).
    xml = '<?xml version="1.0"?>\n<ErrorResponse><Code>AccessDenied</Code></ErrorResponse>'
    forbidden = ClientError(
        {"Error": {"Code": "403", "Message": xml}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Op"
    )
    for exc in (dynamodb, forbidden, client_error("AccessDenied", 400)):
        err = classify_dynamodb(exc, "UpdateItem Stats")
        assert type(err) is FatalError
        text = str(err)
        assert text.startswith("UpdateItem Stats: access denied (check the IAM policy): ") and "\n" not in text
