"""I/O stubs for benchmarks, named as such: they accept the real sinks' serialized requests and drop them.

The sinks do all their CPU work (documents, update expressions, gzip lines,
request encoding); only the network call is replaced. ``latency`` adds a fixed
service time per call (``time.sleep``: wall time, no CPU), the way a remote
endpoint would. Each stub counts its calls and the bytes it was handed.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["StubDynamoDB", "StubS3", "StubSearch"]


class _Stub:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls = 0
        self.bytes = 0

    def _call(self, size: int) -> None:
        self.calls += 1
        self.bytes += size
        if self.latency:
            time.sleep(self.latency)


class StubDynamoDB(_Stub):
    """UpdateItem accepted (no row state returned: a fresh row); TransactWriteItems committed;
    BatchGetItem finds nothing."""

    def update_item(self, **request: Any) -> dict[str, Any]:
        self._call(0)
        return {"Attributes": {}}

    def transact_write_items(self, **request: Any) -> dict[str, Any]:
        self._call(0)
        return {}

    def batch_get_item(self, **request: Any) -> dict[str, Any]:
        self._call(0)
        return {"Responses": {}}


class StubSearch(_Stub):
    """The index exists, no document is found, every bulk action succeeds."""

    def index_exists(self, index: str) -> bool:
        return True

    def mget(self, index: str, ids: list[str], source: str) -> list[dict[str, Any]]:
        self._call(0)
        return [{"found": False} for _ in ids]

    def bulk(self, index: str, body: bytes, actions: int) -> list[dict[str, Any]]:
        self._call(len(body))
        return [{"status": 201} for _ in range(actions)]


class StubS3(_Stub):
    """PutObject accepted (conditional creation always succeeds)."""

    def put_object(self, **request: Any) -> dict[str, Any]:
        self._call(len(request["Body"]))
        return {"ETag": f'"{self.calls}"'}
