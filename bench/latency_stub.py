"""A latency-only stub of DynamoDB, OpenSearch and S3 for ``bench e2e`` (a stub, named as one).

``python -m bench.latency_stub [--dynamodb-ms 5] [--mget-ms 20] [--bulk-ms 20] [--s3-ms 30]``
prints one JSON line ``{"dynamodb": url, "search": url, "s3": url}`` and serves
until killed. It is not an emulator: it answers exactly the calls a shard
process with every sink makes, with minimal valid responses, after a fixed
service time (``time.sleep`` in the connection's thread: wall time, no CPU), so
the benchmark measures the worker against a remote service's latency without
an emulator's CPU on the machine. Three threaded HTTP/1.1 servers (one thread
per connection, keep-alive), so concurrent calls overlap as they would against
the real services. It runs in its own process, off the shard process's cores'
hot path.

What each endpoint answers:

* **DynamoDB** (JSON protocol, by ``X-Amz-Target``): ``DescribeTable`` (start-up)
  a table with keys ``pk``/``sk``; ``UpdateItem`` always succeeds (conditions are
  not evaluated) and applies the update's ``SET``/``ADD``/``REMOVE`` to a row
  kept in memory, answering ``ReturnValues=ALL_NEW`` with that row, as the
  aggregates sink expects; ``BatchGetItem`` answers the rows held (none at start).
* **OpenSearch**: ``HEAD /<index>`` 200 (the index exists); ``_mget`` finds no
  document (so every bulk action is a ``create``); ``_bulk`` answers 201 for
  every action.
* **S3** (path style): ``HEAD /<bucket>`` 200; ``PUT`` 200 with an ETag (the
  conditional ``If-None-Match`` always succeeds); ``GET`` of an object 404.

Every call is counted by operation, with the bytes received and the items it
carried (UpdateItem rows, TransactWriteItems rows, BatchGetItem keys, bulk actions, mget ids, archived
lines in a PUT's gzip body). ``GET /__stub__/counts`` on any of the three ports
returns the counts; ``GET /__stub__/rows`` the DynamoDB rows held.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import re
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

__all__ = ["Stub", "main"]

Reply = tuple[int, dict[str, str], bytes]
NOT_FOUND_XML = b"<Error><Code>NoSuchKey</Code><Message>stub: no objects</Message></Error>"


class Stub:
    """The three stub services' shared state: counters and the DynamoDB rows."""

    def __init__(self, *, dynamodb_ms: float, mget_ms: float, bulk_ms: float, s3_ms: float) -> None:
        self.latency = {"dynamodb": dynamodb_ms / 1000, "mget": mget_ms / 1000, "bulk": bulk_ms / 1000}
        self.latency["s3"] = s3_ms / 1000
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.rows: dict[str, dict[str, Any]] = {}  # "table|key json" -> item (DynamoDB JSON)

    def count(self, op: str, size: int, items: int = 0) -> None:
        with self.lock:
            self.calls[op] += 1
            self.bytes[op] += size
            self.items[op] += items

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"calls": dict(self.calls), "bytes": dict(self.bytes), "items": dict(self.items)}

    # -- DynamoDB ----------------------------------------------------------------------------

    def dynamodb(self, target: str, body: bytes) -> Reply:
        op = target.rpartition(".")[2]
        req = orjson.loads(body or b"{}")
        if op == "DescribeTable":
            self.count(op, len(body))
            keys = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
            out: Any = {"Table": {"TableName": req["TableName"], "TableStatus": "ACTIVE", "KeySchema": keys}}
        elif op == "UpdateItem":
            self.count(op, len(body), 1)
            time.sleep(self.latency["dynamodb"])
            row = self._update(req)
            out = {"Attributes": row} if req.get("ReturnValues") == "ALL_NEW" else {}
        elif op == "TransactWriteItems":
            updates = [item["Update"] for item in req["TransactItems"]]
            self.count(op, len(body), len(updates))
            time.sleep(self.latency["dynamodb"])
            for update in updates:
                self._update(update, answer=False)
            out = {}
        elif op == "BatchGetItem":
            keys_asked = sum(len(t["Keys"]) for t in req["RequestItems"].values())
            self.count(op, len(body), keys_asked)
            time.sleep(self.latency["dynamodb"])
            with self.lock:
                found = {
                    table: [r for k in spec["Keys"] if (r := self.rows.get(_row_key(table, k))) is not None]
                    for table, spec in req["RequestItems"].items()
                }
            out = {"Responses": found, "UnprocessedKeys": {}}
        else:
            self.count(f"unexpected {op}", len(body))
            msg = {"__type": "com.amazon.coral.validate#ValidationException", "message": f"stub: no {op}"}
            return 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(msg).encode()
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, orjson.dumps(out)

    def _update(self, req: dict[str, Any], *, answer: bool = True) -> dict[str, Any]:
        """Apply the update expression's SET / ADD / REMOVE to the row (conditions are not checked);
        the row after it (a copy) when ``answer``."""
        names = req.get("ExpressionAttributeNames", {})
        values = req.get("ExpressionAttributeValues", {})
        actions = _actions(req.get("UpdateExpression", ""))
        with self.lock:
            row = self.rows.setdefault(_row_key(req["TableName"], req["Key"]), dict(req["Key"]))
            for verb, path, value in actions:
                names_path = [names.get(p, p) for p in path]
                if verb == "SET":
                    _put(row, names_path, values[value])
                elif verb == "ADD":
                    old = row.get(names_path[0], {"N": "0"})
                    row[names_path[0]] = {"N": str(Decimal(old["N"]) + Decimal(values[value]["N"]))}
                elif verb == "REMOVE":
                    _put(row, names_path, None)
            return orjson.loads(orjson.dumps(row)) if answer else {}  # a copy, outside the lock's rows

    # -- OpenSearch ----------------------------------------------------------------------------

    def search(self, method: str, path: str, body: bytes) -> Reply:
        route = path.split("?", 1)[0].strip("/").split("/")
        js = {"Content-Type": "application/json"}
        if method == "HEAD" and len(route) == 1:
            self.count("HEAD index", 0)
            return 200, js, b""
        if method == "POST" and route[-1] == "_mget":
            ids = json.loads(body)["ids"]
            self.count("mget", len(body), len(ids))
            time.sleep(self.latency["mget"])
            return 200, js, json.dumps({"docs": [{"_id": i, "found": False} for i in ids]}).encode()
        if method == "POST" and route[-1] == "_bulk":
            lines = [ln for ln in body.split(b"\n") if ln.strip()]
            verbs = [next(iter(json.loads(ln))) for ln in lines[0::2]]  # action line, then its document
            self.count("bulk", len(body), len(verbs))
            time.sleep(self.latency["bulk"])
            items = [{verb: {"status": 201}} for verb in verbs]
            return 200, js, json.dumps({"errors": False, "items": items}).encode()
        self.count(f"unexpected {method} {route[-1]}", len(body))
        return 400, js, json.dumps({"error": {"type": "stub", "reason": f"stub: no {method} {path}"}}).encode()

    # -- S3 --------------------------------------------------------------------------------------

    def s3(self, method: str, path: str, body: bytes) -> Reply:
        parts = path.split("?", 1)[0].strip("/").split("/", 1)
        xml = {"Content-Type": "application/xml"}
        if method == "HEAD" and len(parts) == 1:
            self.count("HeadBucket", 0)
            return 200, xml, b""
        if method == "PUT" and len(parts) == 2:
            lines = gzip.decompress(body).count(b"\n") if body[:2] == b"\x1f\x8b" else 0
            self.count("PutObject", len(body), lines)
            time.sleep(self.latency["s3"])
            with self.lock:
                etag = f'"stub-{self.calls["PutObject"]}"'
            return 200, {"ETag": etag}, b""
        if method == "GET" and len(parts) == 2:
            self.count("GetObject", 0)
            time.sleep(self.latency["s3"])
            return 404, xml, NOT_FOUND_XML
        self.count(f"unexpected {method}", len(body))
        return 400, xml, b"<Error><Code>InvalidRequest</Code><Message>stub</Message></Error>"


def _row_key(table: str, key: dict[str, Any]) -> str:
    return f"{table}|{orjson.dumps(key, option=orjson.OPT_SORT_KEYS).decode()}"


@functools.lru_cache(maxsize=4096)
def _actions(expression: str) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """``SET a.b = :v, c = :w ADD d :x REMOVE e.f`` -> (verb, path, value placeholder) per action
    (parsed once per distinct expression: the sink's expressions repeat)."""
    pieces = re.split(r"\b(SET|ADD|REMOVE|DELETE)\b", expression)
    out = []
    for verb, clause in ((pieces[i], pieces[i + 1]) for i in range(1, len(pieces) - 1, 2)):
        for part in clause.split(","):
            action = part.strip()
            if verb == "SET":
                path, _, value = action.partition("=")
                out.append((verb, tuple(path.strip().split(".")), value.strip()))
            elif verb == "ADD":
                path, value = action.split()
                out.append((verb, (path,), value))
            elif verb == "REMOVE":
                out.append((verb, tuple(action.split(".")), ""))
    return tuple(out)


def _put(row: dict[str, Any], path: list[str], value: Any) -> None:
    """Set (``value``) or remove (``None``) a top-level attribute or a key of a map attribute."""
    if len(path) == 1:
        if value is None:
            row.pop(path[0], None)
        else:
            row[path[0]] = value
        return
    inner = row.setdefault(path[0], {"M": {}})["M"]
    if value is None:
        inner.pop(path[1], None)
    else:
        inner[path[1]] = value


def _handler(stub: Stub, service: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the clients' connection pools are reused
        # TCP_NODELAY, and each response in one write: no Nagle / delayed-ACK stall (40 ms a call)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                return bytes(out)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            if self.path.startswith("/__stub__/"):
                what = self.path.rsplit("/", 1)[1]
                with stub.lock:
                    rows = list(stub.rows.values()) if what == "rows" else None
                data = stub.snapshot() if what == "counts" else rows
                status, headers, out = 200, {"Content-Type": "application/json"}, json.dumps(data).encode()
            elif service == "dynamodb":
                status, headers, out = stub.dynamodb(self.headers.get("X-Amz-Target", ""), body)
            elif service == "search":
                status, headers, out = stub.search(self.command, self.path, body)
            else:
                status, headers, out = stub.s3(self.command, self.path, body)
            self.send_response_only(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(out)))
            buffered: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
            head = b"".join(buffered) + b"\r\n"
            buffered.clear()
            self.wfile.write(head if self.command == "HEAD" else head + out)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve(stub: Stub) -> dict[str, str]:
    """Start the three servers on free loopback ports (daemon threads); their base URLs."""
    urls = {}
    for service in ("dynamodb", "search", "s3"):
        server = _Server(("127.0.0.1", 0), _handler(stub, service))
        threading.Thread(target=server.serve_forever, name=f"stub-{service}", daemon=True).start()
        urls[service] = f"http://127.0.0.1:{server.server_address[1]}"
    return urls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency_stub", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dynamodb-ms", type=float, default=5.0, help="per UpdateItem / BatchGetItem")
    ap.add_argument("--mget-ms", type=float, default=20.0, help="per OpenSearch _mget")
    ap.add_argument("--bulk-ms", type=float, default=20.0, help="per OpenSearch _bulk")
    ap.add_argument("--s3-ms", type=float, default=30.0, help="per S3 PUT (and GET)")
    args = ap.parse_args(argv)
    stub = Stub(dynamodb_ms=args.dynamodb_ms, mget_ms=args.mget_ms, bulk_ms=args.bulk_ms, s3_ms=args.s3_ms)
    print(json.dumps(serve(stub)), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
