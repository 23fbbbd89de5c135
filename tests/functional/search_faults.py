"""Fault injection for the search sink: a client whose calls fail on cue, and faults at its
transport seam on a simulated clock.

:class:`FaultyClient` is a real :class:`~worker.sinks.search.client.SearchClient`
whose next bulk/mget calls crash the process, fail, lose their answer or come
back partially applied.

:class:`FlakyConnection` is a fake standing in front of the real connection
of a :class:`~worker.sinks.search.client.SearchClient` (its ``connection``
attribute, through which every request goes). It fails the way the network
and the cluster do, and raises what botocore's HTTP session itself raises, so
the client's own classification runs on every injected fault:

* an **outage** until a simulated time: every call fails to connect;
* a **throttling storm**: the next calls are answered 429 with ``Retry-After``
  (nothing reaches the index);
* a **hung connection**: a call spends the client's read timeout on the
  simulated clock, then fails as a timeout, either before the request reached
  the cluster or after the cluster applied it (the answer never came).

The pipeline's retry policy runs on the same :class:`~tests.simclock.SimClock`,
so an outage of minutes costs microseconds of wall time and spends the
``max_outage_seconds`` budget exactly as the clock says.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from tests.simclock import SimClock
from worker.errors import RetryableError
from worker.sinks.search.client import Connection, SearchClient

THROTTLED = b'{"error":{"type":"too_many_requests","reason":"injected: throttling storm"},"status":429}'
STORM_RETRY_AFTER = "2"  # seconds, as the cluster would send it


@dataclass
class TransportFaults:
    """What the next calls meet; ``counts`` tallies the calls each fault kind failed."""

    sim: SimClock
    counts: dict[str, int]
    down_until: float = 0.0  # an outage: every call fails to connect until this simulated time
    storm: int = 0  # a throttling storm: this many next calls are answered 429 with Retry-After
    hangs: deque[str] = field(default_factory=deque)  # next calls hang: "before" / "after" reaching the cluster

    def clear(self) -> None:
        self.down_until, self.storm = 0.0, 0
        self.hangs.clear()

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


class FlakyConnection:
    """A fake in front of a real :class:`Connection`, failing on cue (see the module)."""

    def __init__(self, real: Connection, faults: TransportFaults) -> None:
        self.real = real
        self.faults = faults

    def perform_request(self, method: str, path: str, *rest: Any) -> tuple[int, Mapping[str, str], bytes]:
        """:meth:`Connection.perform_request`'s arguments (params, body, headers) pass through."""
        f = self.faults
        url = self.real.base + path
        if f.sim() < f.down_until:
            f.note("outage calls")
            raise EndpointConnectionError(endpoint_url=url, error=ConnectionRefusedError(111, "Connection refused"))
        if f.storm > 0:
            f.storm -= 1
            f.note("storm calls")
            return 429, {"Retry-After": STORM_RETRY_AFTER, "content-type": "application/json"}, THROTTLED
        hang = f.hangs.popleft() if f.hangs else None
        if hang == "after":  # the cluster applies the request; its answer never comes
            self.real.perform_request(method, path, *rest)
        if hang is not None:
            f.note("hung calls")
            timeout = self.real.timeout
            assert timeout > 0, "a hung call costs the client's read timeout"
            f.sim.advance(timeout)
            raise ReadTimeoutError(endpoint_url=url, error=f"injected: read timed out (read timeout={timeout})")
        return self.real.perform_request(method, path, *rest)

    def close(self) -> None:
        self.real.close()


class Crash(Exception):
    """A process crash (not a WorkerError: the pipeline stops, nothing is acknowledged)."""


class FaultyClient(SearchClient):
    """A real client whose next bulk/mget calls fail on purpose (fault injection).

    ``faults`` holds one entry per coming bulk call: ``None`` (pass), ``"crash"``
    / ``"crash-after"`` (the process dies before / after the request reached the
    server), ``"retry"`` / ``"lost"`` (a connection error before sending / after
    the server applied it), ``"items"`` (some items come back 429 and are not
    applied, others 503 after being applied). ``mget_faults`` likewise for
    mget (``"retry"``). ``after_mget`` runs after each read (a concurrent writer).
    """

    def __init__(self, *args: Any, rng: random.Random | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults: deque[str | None] = deque()
        self.mget_faults: deque[str | None] = deque()
        self.after_mget: Callable[[], None] | None = None
        self.rng = rng or random.Random(0)

    def mget(self, index: str, ids: Any, source_includes: str) -> list[dict[str, Any]]:
        fault = self.mget_faults.popleft() if self.mget_faults else None
        if fault == "retry":
            raise RetryableError("injected: connection reset before mget")
        docs = super().mget(index, ids, source_includes)
        if self.after_mget is not None:
            self.after_mget()
        return docs

    def bulk(self, index: str, body: bytes, actions: int) -> list[dict[str, Any]]:
        fault = self.faults.popleft() if self.faults else None
        if fault == "crash":
            raise Crash("injected: crash before bulk")
        if fault == "retry":
            raise RetryableError("injected: connection refused")
        if fault == "items":
            return self._partial(index, body, actions)
        items = super().bulk(index, body, actions)
        if fault == "crash-after":
            raise Crash("injected: crash after bulk")
        if fault == "lost":
            raise RetryableError("injected: response lost")
        return items

    def _partial(self, index: str, body: bytes, actions: int) -> list[dict[str, Any]]:
        lines = body.split(b"\n")[: 2 * actions]
        pairs = [lines[i : i + 2] for i in range(0, len(lines), 2)]
        mode = [self.rng.choice(("send", "429", "503-applied")) for _ in pairs]
        sent = [p for p, m in zip(pairs, mode, strict=True) if m != "429"]
        results = super().bulk(index, b"".join(b"\n".join(p) + b"\n" for p in sent), len(sent)) if sent else []
        it = iter(results)
        out = []
        for m in mode:
            if m == "429":
                out.append({"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "injected"}})
            else:
                res = next(it)
                if m == "503-applied":
                    res = {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "injected"}}
                out.append(res)
        return out
