"""Aggregates rows: marks, planned writes and error mapping (pure)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from worker.aws import classify_dynamodb
from worker.canonical import seq_text
from worker.errors import Action, FatalError, RetryableError
from worker.sinks.aggregates.store import Outcome, RowState, RowWrite, hwm_entry, parse_entry, state_of, transact

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


# -- transactions ---------------------------------------------------------------------------------


class Answers:
    """A stand-in for the DynamoDB client's ``transact_write_items``: records the call, raises a given error."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return {}


def cancelled(*codes: str) -> ClientError:
    response: Any = {
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "CancellationReasons": [{"Code": c, "Message": f"{c} message"} for c in codes],
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, "TransactWriteItems")


def rows(n: int) -> list[RowWrite]:
    return [RowWrite("T", "agg", f"[{i}]", {"k": i}, [("count", D(1))], {"s1": (5, 9)}, i % 2 == 0) for i in range(n)]


def test_a_transaction_carries_each_rows_update_with_its_own_condition() -> None:
    ddb = Answers()
    written = rows(3)
    assert transact(ddb, written, now=1000) == [Outcome.APPLIED] * 3  # type: ignore[arg-type]
    (call,) = ddb.calls
    for action, row in zip(call["TransactItems"], written, strict=True):
        single = row.request(now=1000)
        assert single.pop("ReturnValues") == "ALL_NEW"
        assert action == {"Update": single}  # the same update and condition as the single UpdateItem


def test_a_cancelled_transaction_gives_each_row_its_outcome() -> None:
    ddb = Answers(cancelled("None", "ConditionalCheckFailed", "TransactionConflict", "None"))
    got = transact(ddb, rows(4), now=1000)  # type: ignore[arg-type]
    assert got == [Outcome.NOT_TRIED, Outcome.CONFLICT, Outcome.CONFLICT, Outcome.NOT_TRIED]


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (cancelled("None", "ThrottlingError"), RetryableError, "T agg [1]: ThrottlingError"),
        (cancelled("ValidationError", "None"), FatalError, "T agg [0]: ValidationError: ValidationError message"),
        (cancelled("None"), RetryableError, "cancelled with 1 reasons for 2 rows"),
        (cancelled("Whatever", "None"), RetryableError, "cancelled: Whatever"),
        (client_error("ProvisionedThroughputExceededException"), RetryableError, "TransactWriteItems (2 rows"),
        (client_error("ResourceNotFoundException"), FatalError, "first T agg [0]"),
        (ReadTimeoutError(endpoint_url="http://x"), RetryableError, "TransactWriteItems (2 rows"),
    ],
)
def test_transaction_failures_map_to_one_action(error: Exception, kind: type, text: str) -> None:
    with pytest.raises(kind) as info:
        transact(Answers(error), rows(2), now=1000)  # type: ignore[arg-type]
    assert text in str(info.value)
    assert info.value.__cause__ is error


def test_state_after_a_write_is_the_read_state_plus_the_write() -> None:
    state = RowState(True, {"s1": hwm_entry(3, 10), "old": "x@1", "s2": hwm_entry(7, 10)}, {"count": D(4)}, 99.0)
    row = RowWrite(
        "T", "agg", "[1]", {}, [("count", D(-1)), ("rev", D("2.5"))], {"s1": (4, 6)}, False, [("old", "x@1")]
    )
    after = state.after(row, now=2000)
    assert after.hwm == {"s1": hwm_entry(6, 2000), "s2": hwm_entry(7, 10)}  # marked, pruned, others kept
    assert after.totals == {"count": D(3), "rev": D("2.5")}
    assert after.exists and after.read_at == 99.0  # derived, not read: it ages from the last read
    new = RowWrite("T", "agg", "[2]", {}, [("count", D(1))], {"s1": (4, 4)}, True)
    assert RowState(False, read_at=5.0).after(new, now=2000) == RowState(
        True, {"s1": hwm_entry(4, 2000)}, {"count": D(1)}, 5.0
    )
