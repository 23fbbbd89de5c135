"""The lean DynamoDB calls of the aggregates sink: they answer exactly as boto3 does (moto, server
mode), are signed as SigV4 specifies (a loopback recorder), and turn damaged or foreign answers
into the errors botocore would raise (a loopback server with canned answers)."""

from __future__ import annotations

import base64
import http.server
import threading
import zlib
from decimal import Decimal as D
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import orjson
import pytest
from botocore.exceptions import ClientError

from tests.functional.test_search_sigv4 import (  # the SigV4 known-answer helpers and fixtures
    AMZ_DATE,
    CREDS,
    REGION,
    _authorization,
    _spec_signature,
    fixed_clock,  # noqa: F401
    recorder,  # noqa: F401
)
from worker.aws import classify_dynamodb, client
from worker.config import AwsSection, Config
from worker.errors import RetryableError
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


def test_a_lean_call_is_signed_as_the_specification_says(recorder: Any, fixed_clock: Any) -> None:  # noqa: F811
    """moto does not check signatures: the request a loopback recorder receives is checked against
    SigV4 written out from the specification (the search tier's known-answer helpers)."""
    url, seen = recorder
    session = botocore.session.get_session()
    session.set_credentials(CREDS.access_key, CREDS.secret_key, CREDS.token)
    real = session.create_client("dynamodb", region_name=REGION, endpoint_url=url)
    params = row(1, create=True).request(NOW)
    wire_client(real).update_item(**params)
    (rec,) = seen
    assert rec.method == "POST" and rec.target == "/"
    assert rec.header("x-amz-target") == "DynamoDB_20120810.UpdateItem"
    assert rec.header("content-type") == "application/x-amz-json-1.0"
    assert orjson.loads(rec.body) == orjson.loads(orjson.dumps(params, default=lambda b: base64.b64encode(b).decode()))
    auth = _authorization(rec.header("authorization"))
    assert auth["Credential"] == f"{CREDS.access_key}/{AMZ_DATE[:8]}/{REGION}/dynamodb/aws4_request"
    signed = auth["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-target", "x-amz-security-token"} <= set(signed)
    assert auth["Signature"] == _spec_signature(rec, urlsplit(url).netloc, "dynamodb", signed)


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the next canned (status, headers, body)."""

    replies: list[tuple[int, dict[str, str], bytes]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.replies.pop(0)
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_damaged_and_foreign_answers_become_the_errors_botocore_would_raise() -> None:
    ok = b'{"Attributes":{}}'
    replies = [
        (200, {"x-amz-crc32": str(zlib.crc32(ok) ^ 1)}, ok),  # damaged on the way
        (500, {"Content-Type": "text/html"}, b"<html>proxy error</html>"),  # not DynamoDB's JSON
        (400, {"x-amzn-RequestId": "r1"}, b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException:x"}'),
        (200, {"x-amz-crc32": str(zlib.crc32(ok))}, ok),
    ]
    handler = type("Answers", (_Answers,), {"replies": replies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        session = botocore.session.get_session()
        session.set_credentials("AKID", "secret")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        wire = wire_client(session.create_client("dynamodb", region_name=REGION, endpoint_url=url))
        params = row(1, create=True).request(NOW)
        codes = []
        for _ in range(3):
            with pytest.raises(ClientError) as info:
                wire.update_item(**params)
            err = info.value
            codes.append(err.response["Error"]["Code"])
            assert isinstance(classify_dynamodb(err, "UpdateItem"), RetryableError)  # all three: retry
        assert codes == ["CRC32CheckFailed", "500", "ThrottlingException"]
        assert info.value.response["ResponseMetadata"]["RequestId"] == "r1"
        assert without_metadata(wire.update_item(**params)) == {"Attributes": {}}
    finally:
        server.shutdown()
        server.server_close()
