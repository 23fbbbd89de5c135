"""The aggregates sink's hot DynamoDB calls, sent as the wire JSON this package already builds.

:func:`wire_client` wraps a boto3 DynamoDB client: ``transact_write_items``,
``update_item`` and ``batch_get_item`` go through a lean path, every other
method is the client's own. Why: the sink builds its requests in DynamoDB's
wire form already (attribute values as ``{"N": "1.5"}``, see
:meth:`~worker.sinks.aggregates.store.RowWrite.request`), and for a flood of
new groups botocore's per-call machinery (validating and serializing every
attribute value of up to 100 rows, evaluating the endpoint rules' JMESPath
over the whole request) was most of the shard process's CPU (``bench e2e``,
high cardinality). The lean path keeps everything that matters of botocore:

* the client's own **signer** (its credentials, refreshed as botocore does;
  its region; SigV4) and its own **HTTP session** (connection pool, proxies,
  CA bundle, connect and read timeouts from ``[aws]``), and its endpoint URL;
* the **errors** botocore would raise: a non-200 answer becomes a
  :class:`~botocore.exceptions.ClientError` with the same ``Error.Code`` (the
  JSON protocol's ``__type`` after ``#``), message, HTTP metadata and, for a
  cancelled transaction, ``CancellationReasons``; connection failures and
  timeouts are botocore's own exceptions (from its HTTP session). So the
  classification in :mod:`worker.aws` applies unchanged;
* DynamoDB's **CRC32** of the answer (``x-amz-crc32``), checked as botocore
  does: a mismatch is a transient failure.

What it drops: client-side parameter validation (the requests are built by
typed code here, and DynamoDB validates them), botocore's retries (already
off: the pipeline retries, see :func:`worker.aws.client`) and its event hooks
for these three operations. The answers are the wire JSON too: binary values
stay base64 text (the sink only reads ``S`` and ``N`` values of its rows).
"""

from __future__ import annotations

import base64
import zlib
from typing import TYPE_CHECKING, Any, cast

import orjson
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["wire_client"]

LEAN_OPERATIONS = {
    "transact_write_items": "TransactWriteItems",
    "update_item": "UpdateItem",
    "batch_get_item": "BatchGetItem",
}


def wire_client(client: DynamoDBClient) -> DynamoDBClient:
    """``client`` with the aggregates sink's three hot operations on the lean path (see module)."""
    if isinstance(client, _WireClient):
        return cast("DynamoDBClient", client)
    return cast("DynamoDBClient", _WireClient(client))


class _WireClient:
    """Delegates to the boto3 client, except the methods named in :data:`LEAN_OPERATIONS`."""

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client
        meta = client.meta.service_model.metadata
        self._target = meta["targetPrefix"]
        self._content_type = f"application/x-amz-json-{meta['jsonVersion']}"
        self._url = client.meta.endpoint_url.rstrip("/") + "/"
        # botocore's own signer and HTTP session: credentials, region, proxies, TLS, timeouts
        self._signer = client._request_signer  # type: ignore[attr-defined]
        self._http = client._endpoint.http_session  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        return self.call("TransactWriteItems", params)

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self.call("UpdateItem", params)

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return self.call("BatchGetItem", params)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One call: its parsed answer, or the ClientError botocore would raise."""
        headers = {"X-Amz-Target": f"{self._target}.{operation}", "Content-Type": self._content_type}
        request = AWSRequest(method="POST", url=self._url, data=orjson.dumps(params, default=_blob), headers=headers)
        self._signer.sign(operation, request)
        response = self._http.send(request.prepare())
        body: bytes = response.content
        meta: dict[str, Any] = {"HTTPStatusCode": response.status_code, "HTTPHeaders": dict(response.headers)}
        if "x-amzn-requestid" in response.headers:
            meta["RequestId"] = response.headers["x-amzn-requestid"]
        crc = response.headers.get("x-amz-crc32")
        if crc is not None and zlib.crc32(body) != int(crc):
            failed: Any = {"Error": {"Code": "CRC32CheckFailed", "Message": "the answer's CRC32 differs"}}
            failed["ResponseMetadata"] = meta
            raise ClientError(failed, operation)
        try:
            parsed = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            parsed = None
        if response.status_code == 200 and isinstance(parsed, dict):
            parsed["ResponseMetadata"] = meta
            return parsed
        error: Any = _error(response.status_code, parsed, body, meta)
        raise ClientError(error, operation)


def _error(status: int, parsed: Any, body: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """The error response botocore's JSON parser builds: the code is ``__type`` (else the HTTP
    status) without what precedes ``#`` or follows ``:``; modeled fields such as a cancelled
    transaction's ``CancellationReasons`` at the top level."""
    if not isinstance(parsed, dict):
        text = body.decode("utf-8", "replace")[:500]
        return {"Error": {"Code": str(status), "Message": text}, "ResponseMetadata": meta}
    code = str(parsed.get("__type") or status).split(":", 1)[0].rpartition("#")[2]
    message = parsed.get("message", parsed.get("Message", ""))
    out: dict[str, Any] = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": meta}
    if "CancellationReasons" in parsed:
        out["CancellationReasons"] = parsed["CancellationReasons"]
    return out


def _blob(value: Any) -> str:
    """Binary attribute values go as base64 text, as botocore sends them."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
