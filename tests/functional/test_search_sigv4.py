"""SigV4 known answers: the search client's signed requests, as a loopback server receives them.

No AWS endpoint exists here, so each request the real client sends (for ``es``
and for ``aoss``) is captured by a recording HTTP server on loopback, under a
fixed clock and fixed credentials, and its signature is checked twice against
independent computations:

* botocore's own ``SigV4Auth`` signing an ``AWSRequest`` rebuilt from what the
  server received (the signer AWS's SDKs use);
* the SigV4 algorithm written out here from the specification (canonical
  request, string to sign, derived key), as the service would verify it.

Serverless (``aoss``) requires the ``x-amz-content-sha256`` header carrying the
SHA-256 of the payload, signed: checked against the received body's hash.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker.config import SearchSection
from worker.sinks.search.client import SearchClient, connect

NOW = datetime.datetime(2026, 3, 14, 15, 9, 26)  # the fixed clock (UTC)
AMZ_DATE = "20260314T150926Z"
CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-example")
REGION = "eu-west-3"


@dataclass
class Received:
    method: str
    target: str  # path and query as sent
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers if k.lower() == name)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[Received]

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(Received(self.command, self.path, list(self.headers.items()), body))
        reply = b'{"errors":false,"items":[{"index":{"status":201}}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[Received]]]:
    seen: list[Received] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def fixed_clock(monkeypatch):
    """botocore's signer reads the time through this function: a fixed clock for known answers."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: NOW)


def _send(url: str, service: str) -> SearchClient:
    section = SearchSection(url=url, auth="sigv4", sigv4_service=service, region=REGION)
    client = connect(section, "us-east-1", credentials=CREDS)
    body = b'{"index":{"_id":"a|1"}}\n{"pk":"a","n":1.50}\n'
    client.bulk("orders", body, 1)
    return client


def _authorization(value: str) -> dict[str, str]:
    algorithm, rest = value.split(" ", 1)
    assert algorithm == "AWS4-HMAC-SHA256"
    return dict(part.strip().split("=", 1) for part in rest.split(","))


def _spec_signature(rec: Received, host: str, service: str, signed: list[str]) -> str:
    """SigV4 from the specification, over what the server received."""
    split = urlsplit(rec.target)
    query = sorted(parse_qsl(split.query, keep_blank_values=True))
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    values = {k.lower(): " ".join(v.split()) for k, v in rec.headers}
    values["host"] = host
    canonical_headers = "".join(f"{h}:{values[h]}\n" for h in signed)
    payload_hash = hashlib.sha256(rec.body).hexdigest()
    canonical = "\n".join(
        [
            rec.method,
            quote(split.path, safe="/-_.~"),
            canonical_query,
            canonical_headers,
            ";".join(signed),
            payload_hash,
        ]
    )
    scope = f"{AMZ_DATE[:8]}/{REGION}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", AMZ_DATE, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + CREDS.secret_key).encode()
    for part in (AMZ_DATE[:8], REGION, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _botocore_signature(rec: Received, url: str, service: str, signed: list[str]) -> str:
    """botocore's SigV4Auth over an AWSRequest rebuilt from the received request's signed headers."""
    headers = {k: v for k, v in rec.headers if k.lower() in signed and k.lower() not in ("host", "x-amz-date")}
    for name in ("X-Amz-Security-Token",):  # botocore adds it itself from the credentials
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    request = AWSRequest(method=rec.method, url=url + rec.target, data=rec.body, headers=headers)
    SigV4Auth(CREDS, service, REGION).add_auth(request)
    return _authorization(request.headers["Authorization"])["Signature"]


@pytest.mark.parametrize("service", ["es", "aoss"])
def test_signed_bulk_matches_botocore_and_the_specification(recorder, fixed_clock, service):
    url, seen = recorder
    _send(url, service).close()
    (rec,) = seen
    host = urlsplit(url).netloc
    auth = _authorization(rec.header("authorization"))
    assert auth["Credential"] == f"AKIDEXAMPLE/20260314/{REGION}/{service}/aws4_request"
    signed = auth["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"} <= set(signed)
    assert rec.header("x-amz-date") == AMZ_DATE
    assert rec.header("x-amz-security-token") == "session-token-example"
    # The payload hash Serverless requires: the SHA-256 of the very bytes received.
    assert rec.header("x-amz-content-sha256") == hashlib.sha256(rec.body).hexdigest()
    assert rec.body == b'{"index":{"_id":"a|1"}}\n{"pk":"a","n":1.50}\n'
    assert rec.target.startswith("/orders/_bulk?filter_path=")
    assert auth["Signature"] == _spec_signature(rec, host, service, signed)
    assert auth["Signature"] == _botocore_signature(rec, url, service, signed)


def test_the_signature_changes_with_the_service_and_the_body(recorder, fixed_clock):
    """The known answers are not constant: another service or another byte gives another signature."""
    url, seen = recorder
    _send(url, "es").close()
    _send(url, "aoss").close()
    es, aoss = (_authorization(r.header("authorization"))["Signature"] for r in seen)
    assert es != aoss
    tampered = Received(seen[0].method, seen[0].target, seen[0].headers, seen[0].body.replace(b"1.50", b"1.5"))
    signed = _authorization(seen[0].header("authorization"))["SignedHeaders"].split(";")
    assert _spec_signature(tampered, urlsplit(url).netloc, "es", signed) != es
