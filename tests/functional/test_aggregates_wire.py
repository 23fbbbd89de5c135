"""The lean DynamoDB calls of the aggregates sink answer exactly as boto3 does (moto, server mode)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from botocore.exceptions import ClientError

from worker.aws import client
from worker.config import AwsSection, Config
from worker.sinks.aggregates.store import RowWrite, ensure_table, transact
from worker.sinks.aggregates.wire import wire_client

NOW = 1_763_780_400.0


@pytest.fixture
def both(moto_url: str) -> tuple[Any, Any]:
    real = client(Config(aws=AwsSection(endpoint_url=moto_url)), "dynamodb")
    ensure_table(real, "Wire", create=True)
    return real, wire_client(real)


def row(i: int, *, create: bool, first: int = 10, last: int = 10) -> RowWrite:
    group = {"k": f"g{i}", "bin": b"\x00\xffraw"}  # a binary group value goes as base64, as botocore sends it
    deltas = [("count", D(1)), ("revenue", D("1.25"))]
    return RowWrite("Wire", "agg", f'["g{i}"]', group, deltas, {"shard-a": (first, last)}, create)


def without_metadata(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call()
    r = info.value.response
    return {
        "Error": r["Error"],
        "Reasons": r.get("CancellationReasons"),
        "status": r["ResponseMetadata"]["HTTPStatusCode"],
    }  # type: ignore[typeddict-item]


def test_update_item_answers_as_boto3(both: tuple[Any, Any]) -> None:
    real, wire = both
    a = real.update_item(**row(1, create=True).request(NOW))
    b = wire.update_item(**row(2, create=True).request(NOW))
    assert without_metadata(b)["Attributes"]["group"]["M"]["bin"] == {"B": "AP9yYXc="}  # wire JSON: base64 text
    a["Attributes"]["group"]["M"]["bin"]["B"] = "AP9yYXc="  # boto3 decodes it to bytes
    for attrs in (a["Attributes"], b["Attributes"]):
        attrs.pop("sk"), attrs["group"]["M"].pop("k")
    assert without_metadata(a) == without_metadata(b)
    assert b["ResponseMetadata"]["HTTPStatusCode"] == 200
    # a failed condition, and a missing table: the same ClientError
    again = row(1, create=True).request(NOW)
    assert error_of(lambda: real.update_item(**again)) == error_of(lambda: wire.update_item(**again))
    missing = {**again, "TableName": "NoSuchTable"}
    assert error_of(lambda: real.update_item(**missing)) == error_of(lambda: wire.update_item(**missing))


def test_batch_get_item_answers_as_boto3(both: tuple[Any, Any]) -> None:
    real, wire = both
    wire.update_item(**row(3, create=True).request(NOW))
    keys = {"Wire": {"Keys": [{"pk": {"S": "agg"}, "sk": {"S": f'["g{i}"]'}} for i in (3, 4)], "ConsistentRead": True}}
    a, b = real.batch_get_item(RequestItems=keys), wire.batch_get_item(RequestItems=keys)
    a["Responses"]["Wire"][0]["group"]["M"]["bin"]["B"] = "AP9yYXc="
    assert without_metadata(a) == without_metadata(b) and len(b["Responses"]["Wire"]) == 1


def test_transactions_commit_and_cancel_as_with_boto3(both: tuple[Any, Any]) -> None:
    real, wire = both
    assert transact(wire, [row(5, create=True), row(6, create=True)], NOW) == transact(
        real, [row(7, create=True), row(8, create=True)], NOW
    )
    # the second row's condition fails in both: the same cancellation, reason by reason
    cancel_real = [{"Update": r.request(NOW, returns=False)} for r in (row(9, create=True), row(7, create=True))]
    cancel_wire = [{"Update": r.request(NOW, returns=False)} for r in (row(10, create=True), row(5, create=True))]
    a = error_of(lambda: real.transact_write_items(TransactItems=cancel_real))
    b = error_of(lambda: wire.transact_write_items(TransactItems=cancel_wire))
    assert a == b and [r["Code"] for r in b["Reasons"]] == ["None", "ConditionalCheckFailed"]


def test_other_methods_are_the_clients_own(both: tuple[Any, Any]) -> None:
    real, wire = both
    assert wire.describe_table(TableName="Wire")["Table"]["TableName"] == "Wire"
    assert wire.meta is real.meta and wire_client(wire) is wire
