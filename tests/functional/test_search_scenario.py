"""The randomized search-sink scenario, shared by the osmem-server run and the real-OpenSearch run.

A schedule is a random sequence of table operations (put, update, delete, TTL
expiry, identical re-put) over a small key space that includes keys needing
escaping and a key whose id must be hashed. A Python model of the table gives
the records (``worker.shapes.build``) and the final items. The records are then
delivered the way a stream really delivers them: in batches, with duplicates,
crashes before a flush, crashes between bulk chunks, lost responses, transient
and per-item failures, restarts from the last checkpoint, replays from an
earlier checkpoint (or the whole archive), stale records redelivered out of
order after deletes, and a parent→child shard hand-over. Failures are
budgeted in time on a simulated clock (:class:`tests.simclock.SimClock`, the
retry policy's clock and sleep): outages of 1 to 14 minutes are waited out,
longer ones stop the worker without a checkpoint (a restart follows);
throttling storms answer 429 with ``Retry-After``; hung calls spend the read
timeout. Afterwards the index must equal the model: same ids, same projected
documents, nothing deleted comes back.

The fault injection (:mod:`tests.functional.search_faults`) is ``FaultyClient``, a
real :class:`SearchClient` whose next calls fail on purpose, and ``FlakyConnection``,
a fake in front of its transport; everything else is real.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tests.functional.search_faults import FaultyClient, FlakyConnection, TransportFaults
from tests.simclock import SimClock
from worker.config import SearchSection
from worker.decode import decode
from worker.diff import diff
from worker.pipeline import Pipeline, StopProcessing
from worker.records import RawRecord
from worker.retry import RetryPolicy
from worker.shapes import build
from worker.sinks.search import SearchSink
from worker.sinks.search.client import http_settings
from worker.sinks.search.docs import doc_id
from worker.testing import MemoryDeadLetters

PKS = ("a", "b|c", "back\\slash", "é-ü", "L" * 700)  # escaping, UTF-8, hashing (> 512 bytes)
SKS = (Decimal(1), Decimal("2.0"))
PARENT = "shardId-00000001763780400000-parent01"
CHILD = "shardId-00000001763794800000-child001"
# What a batch meets, with its weight (every kind is counted in Delivery.counts).
DELIVERIES = {
    "ok": 10,
    "crash-before-flush": 2,
    "crash-mid": 2,
    "transient": 3,
    "replay": 1,
    "stale": 2,
    "archive": 0.2,
    "zombie": 3,
    "outage": 0.6,  # connections refused for 1 to 40 simulated minutes
    "storm": 0.6,  # 429 with Retry-After for 20 to 300 calls
    "hung": 1,  # 1 to 3 calls each spend the read timeout
}
# Fault tallies by call (TransportFaults.counts) and the stops of workers whose budget ran out.
TRANSPORT_FAULTS = ("outage calls", "storm calls", "hung calls", "budget stops")
TRANSPORT_FAULTS += ("short outages waited out", "long outages stopped")
READ_TIMEOUT = 30.0  # the client's per-call timeout: what a hung call costs on the simulated clock


# -- the table model -------------------------------------------------------------------------


@dataclass
class Stream:
    records: list[tuple[dict[str, Any], str]]  # (canonical record, shard id), stream order
    final: dict[tuple[str, Decimal], dict[str, Any] | None]  # live item, or None once deleted
    expired: dict[tuple[str, Decimal], dict[str, Any]]  # items whose last change was a TTL expiry


def _value_for(rng: random.Random, name: str) -> Any:
    # One DynamoDB type per attribute name, so dynamic mappings never conflict.
    if name == "status":
        return rng.choice(["new", "paid", "shipped", "a|b", "ü"])
    if name == "qty":
        return rng.choice(
            [Decimal(0), Decimal(7), Decimal("1.50"), Decimal("-2.25"), Decimal("1E+2"), Decimal("0.001")]
        )
    if name == "tags":
        return frozenset(rng.sample(["x", "y", "z", "w"], rng.randint(1, 3)))
    if name == "nums":
        return frozenset(Decimal(v) for v in rng.sample([-3, 1, 2, 10, 100], rng.randint(1, 3)))
    if name == "blob":
        return rng.randbytes(rng.randint(1, 6))
    if name == "flag":
        return rng.random() < 0.5
    if name == "note":
        return None
    if name == "addr":
        return {"city": rng.choice(["Lyon", "Osaka"]), "zip": Decimal(rng.randint(1000, 9999))}
    if name == "lines":
        return [{"sku": f"S{rng.randint(1, 9)}", "n": Decimal(rng.randint(1, 3))} for _ in range(rng.randint(0, 2))]
    raise AssertionError(name)


ATTRS = ("status", "qty", "tags", "nums", "blob", "flag", "note", "addr", "lines")


def make_stream(rng: random.Random, n_ops: int) -> Stream:
    """Random operations on the model; the records they produce, in stream order."""
    keys = [(pk, sk) for pk in PKS for sk in SKS]
    table: dict[tuple[str, Decimal], dict[str, Any]] = {}
    final: dict[tuple[str, Decimal], dict[str, Any] | None] = {}
    expired: dict[tuple[str, Decimal], dict[str, Any]] = {}
    records: list[tuple[dict[str, Any], str]] = []
    # 21-digit numbers that cross into 22 digits mid-stream: compared as text they would misorder.
    seq = 10**21 - rng.randint(50, 400)
    split_at = rng.randint(n_ops // 3, max(n_ops // 3, 2 * n_ops // 3))
    for i in range(n_ops):
        seq += rng.choice([1, 1, 2, 7, 10 ** rng.randint(1, 6)])
        shard = PARENT if i < split_at else CHILD
        if i == split_at:
            seq += 10 ** rng.randint(3, 8)  # the child shard starts above the parent's end (A1)
        key = rng.choice(keys)
        kd = {"pk": key[0], "sk": key[1]}
        old = table.get(key)
        op = rng.choices(["put", "update", "delete", "ttl", "reput"], [4, 4, 2, 1, 1])[0]
        if op in ("delete", "ttl") and old is None:
            op = "put"
        if op == "reput" and old is None:
            op = "put"
        if op == "put":
            new = {**kd, **{a: _value_for(rng, a) for a in rng.sample(ATTRS, rng.randint(1, len(ATTRS)))}}
        elif op == "update":
            new = dict(old or kd)
            for a in rng.sample(ATTRS, rng.randint(1, 3)):
                if a in new and rng.random() < 0.3:
                    del new[a]
                else:
                    new[a] = _value_for(rng, a)
        elif op == "reput":
            new = dict(old or kd)
        else:
            new = None
        created = 1_763_780_400 + i // 5
        if new is None:
            assert old is not None
            records.append((build("REMOVE", kd, old=old, sequence=seq, created=created, ttl=op == "ttl"), shard))
            del table[key]
            final[key] = None
            if op == "ttl":
                expired[key] = old
            else:
                expired.pop(key, None)
        else:
            event = "INSERT" if old is None else "MODIFY"
            records.append((build(event, kd, old=old, new=new, sequence=seq, created=created), shard))
            table[key] = new
            final[key] = new
            expired.pop(key, None)
    return Stream(records, final, expired)


# -- reference documents (written independently of worker.sinks.search.docs) ---------------------


def reference(value: Any, decimals: str) -> Any:
    if isinstance(value, Decimal):
        return value if decimals == "number" else str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, frozenset):
        return [reference(v, decimals) for v in sorted(value)]
    if isinstance(value, dict):
        return {k: reference(v, decimals) for k, v in value.items()}
    if isinstance(value, list):
        return [reference(v, decimals) for v in value]
    return value


def normalize(value: Any) -> Any:
    """Parsed JSON with numbers as Decimal, so 1.5 equals Decimal("1.50") by value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def expected_documents(stream: Stream, section: SearchSection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in stream.final.items():
        doc = doc_id({"pk": key[0], "sk": key[1]})
        if item is None:
            old = stream.expired.get(key)
            if old is None or section.ttl_policy == "delete":
                continue
            out[doc] = {**_project(old, section), section.meta_field: {"expired": True}}
        else:
            out[doc] = _project(item, section)
    return out


def _project(item: dict[str, Any], section: SearchSection) -> dict[str, Any]:
    if section.include:
        item = {k: v for k, v in item.items() if k in section.include}
    elif section.exclude:
        item = {k: v for k, v in item.items() if k not in section.exclude}
    item = {section.rename.get(k, k): v for k, v in item.items()}
    return normalize(reference(item, section.decimals))


# -- delivery ---------------------------------------------------------------------------------


@dataclass
class Delivery:
    """Counts of what a schedule went through (so a run can show it exercised everything)."""

    counts: dict[str, int] = field(default_factory=dict)

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


PROJECTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"exclude": ["blob", "note"]},
    {"include": ["pk", "sk", "status", "qty", "addr"]},
    {"rename": {"status": "state", "qty": "quantity"}},
)


def random_section(rng: random.Random, url: str, index: str) -> SearchSection:
    return SearchSection(
        url=url,
        index=index,
        decimals=rng.choice(["number", "string"]),
        ttl_policy=rng.choice(["delete", "mark"]),
        bulk_max_actions=rng.choice([1, 2, 3, 1000]),
        **rng.choice(PROJECTIONS),
    )


class Runner:
    """One schedule: a worker that crashes and restarts, over one index."""

    def __init__(
        self, rng: random.Random, section: SearchSection, stream: Stream, *, verify: bool | str = True
    ) -> None:
        self.rng = rng
        self.section = section
        self.stream = stream
        self.verify = verify
        self.delivery = Delivery()
        self.deadletters = MemoryDeadLetters()
        self.sim = SimClock()
        self.transport = TransportFaults(self.sim, self.delivery.counts)  # the endpoint's, across restarts
        self.sink, self.pipeline = self._start()

    def _start(self) -> tuple[SearchSink, Pipeline]:
        base, settings = http_settings(self.section, "us-east-1")
        settings = replace(settings, verify=self.verify)
        client = FaultyClient(base, settings, timeout=READ_TIMEOUT, rng=self.rng)
        client.connection = FlakyConnection(client.connection, self.transport)  # type: ignore[assignment]
        sink = SearchSink(client, self.section)
        # The production policy (backoff within a 900 s budget) on the simulated clock.
        retry = RetryPolicy(sleep=self.sim.sleep, clock=self.sim, rng=random.Random(self.rng.random()))
        return sink, Pipeline([sink], self.deadletters, retry=retry, max_batch_records=10_000)

    def restart(self) -> None:
        self.pipeline.close()
        self.sink, self.pipeline = self._start()

    @property
    def client(self) -> FaultyClient:
        assert isinstance(self.sink.client, FaultyClient)
        return self.sink.client

    def raw(self, i: int) -> RawRecord:
        rec, shard = self.stream.records[i]
        return RawRecord(rec, f"{shard}/{rec['dynamodb']['SequenceNumber']}", shard)

    def run(self) -> None:
        n = len(self.stream.records)
        checkpoint = 0
        while checkpoint < n:
            try:
                checkpoint = self.step(checkpoint)
            except StopProcessing as exc:
                # Retried for max_outage_seconds in vain: the worker stops, nothing acknowledged.
                if "gave up after" not in str(exc):
                    raise
                self.delivery.note("budget stops")
                self.restart()  # from the last checkpoint, the endpoint maybe still down
        self.client.faults.clear()
        self.client.mget_faults.clear()
        self.transport.clear()

    def step(self, checkpoint: int) -> int:
        """One batch from ``checkpoint`` (delivered, crashed, or replayed); the new checkpoint."""
        n = len(self.stream.records)
        rng = self.rng
        k = rng.randint(1, 8)
        idx = list(range(checkpoint, min(n, checkpoint + k)))
        if rng.random() < 0.2:  # redelivered within the batch
            j = rng.choice(idx)
            idx.insert(rng.randrange(len(idx) + 1), j)
            idx.sort()
        batch = [self.raw(i) for i in idx]
        what = rng.choices(list(DELIVERIES), list(DELIVERIES.values()))[0]
        self.delivery.note(what)
        if what == "crash-before-flush":
            self.pipeline.add(batch)
            self.restart()  # unflushed: dropped, never acknowledged
            return checkpoint
        if what == "crash-mid":
            calls = rng.randint(0, 3)
            self.client.faults.extend([None] * calls + [rng.choice(["crash", "crash-after"])])
            try:
                self.pipeline.process(batch)
            except StopProcessing:
                self.restart()
                return checkpoint
            # The fault was not reached (fewer chunks): a clean batch after all.
            self.restart()
            return idx[-1] + 1
        if what == "transient":
            self.client.faults.extend(rng.choice([["retry"], ["lost"], ["items"], ["items", "items"], [None, "lost"]]))
            if rng.random() < 0.3:
                self.client.mget_faults.append("retry")
        if what == "replay":  # a new owner starting from an older checkpoint
            self.restart()
            return rng.randint(0, checkpoint)
        if what == "stale" and checkpoint:
            # Old records again, out of order (a zombie owner, a late duplicate), maybe after deletes.
            olds = [self.raw(rng.randrange(checkpoint)) for _ in range(rng.randint(1, 4))]
            self.pipeline.process(olds)
        if what == "archive" and checkpoint:
            # A replay of everything acknowledged so far, e.g. from the archive, by a second pipeline.
            side = Runner(random.Random(rng.random()), self.section, self.stream, verify=self.verify)
            side.pipeline.process([self.raw(i) for i in range(checkpoint)])
            side.pipeline.close()
        if what == "zombie":
            # Another worker (the old lease owner) writes between this worker's read and write.
            lo = rng.randint(0, checkpoint)
            hi = rng.randint(lo, min(n, idx[-1] + 1 + 4))
            self.client.after_mget = self._zombie(list(range(lo, hi)))
        if what == "outage":  # minutes on the simulated clock; past the 15-minute budget the worker stops
            minutes = rng.uniform(1, 14) if rng.random() < 0.75 else rng.uniform(16, 40)
            self.transport.down_until = self.sim() + minutes * 60
            self.through_outage(batch, minutes)
            return idx[-1] + 1
        if what == "storm":  # 429 with Retry-After for many calls in a row
            self.transport.storm = rng.randint(20, 300)
        if what == "hung":  # each costs the read timeout; "after": the cluster applied it
            self.transport.hangs.extend(rng.choice(["before", "after"]) for _ in range(rng.randint(1, 3)))
        try:
            self.pipeline.process(batch)
        finally:
            self.client.after_mget = None
        return idx[-1] + 1

    def through_outage(self, batch: list[RawRecord], minutes: float) -> None:
        """Process ``batch`` as an outage of ``minutes`` begins: one under the budget
        (``max_outage_seconds``, 15 minutes) is waited out, one past it stops the worker."""
        t = self.transport
        clean = not t.storm and not t.hangs  # nothing else spends the budget meanwhile
        refused = t.counts.get("outage calls", 0)
        try:
            self.pipeline.process(batch)
        except StopProcessing as exc:
            if minutes < 15 and clean:
                raise AssertionError(f"an outage of {minutes:.1f} min (under the budget) stopped: {exc}") from exc
            if minutes > 15:
                self.delivery.note("long outages stopped")
            raise  # run() restarts the worker
        if minutes > 15 and t.counts.get("outage calls", 0) > refused:
            raise AssertionError(f"an outage of {minutes:.1f} min (past the budget) was waited out")
        if minutes < 15 and t.counts.get("outage calls", 0) > refused:
            self.delivery.note("short outages waited out")

    def _zombie(self, indexes: list[int]) -> Callable[[], None]:
        def write_once() -> None:
            self.client.after_mget = None
            other = Runner(random.Random(self.rng.random()), self.section, self.stream, verify=self.verify)
            other.pipeline.process([self.raw(i) for i in indexes])
            other.pipeline.close()

        return write_once

    def check(self) -> None:
        assert not self.deadletters.parked, [str(e) for e in self.deadletters.parked]
        report = self.sink.report()[self.section.index]
        actual = {k: normalize(v) for k, v in report.items()}
        expected = expected_documents(self.stream, self.section)
        assert sorted(actual) == sorted(expected), f"ids differ: {sorted(actual)} != {sorted(expected)}"
        for doc, body in expected.items():
            assert actual[doc] == body, f"{doc!r}: {actual[doc]} != {body}"


def run_schedule(seed: int, url: str, index: str, *, n_ops: int | None = None, verify: bool | str = True) -> Delivery:
    rng = random.Random(seed)
    section = random_section(rng, url, index)
    stream = make_stream(rng, n_ops or rng.randint(5, 40))
    runner = Runner(rng, section, stream, verify=verify)
    try:
        runner.run()
        runner.check()
    finally:
        runner.pipeline.close()
    return runner.delivery


def iter_seeds(base: int, count: int) -> Iterator[int]:
    return iter(range(base, base + count))


# -- the model itself (so this module's own logic can fail too) ---------------------------------


def test_the_model_produces_records_whose_replay_gives_the_final_items():
    rng = random.Random(7)
    stream = make_stream(rng, 300)
    table: dict[Any, Any] = {}
    last = 0
    for rec, _shard in stream.records:
        r = decode(RawRecord(rec, "model"))
        assert r.sequence > last
        last = r.sequence
        change = diff(r)
        key = (r.keys["pk"], r.keys["sk"])
        table[key] = None if change.deleted else r.new_image
    assert table == stream.final
    assert len(str(stream.records[-1][0]["dynamodb"]["SequenceNumber"])) >= 22  # crossed a digit length
    kinds = {diff(decode(RawRecord(rec, "m"))).kind.value for rec, _ in stream.records}
    assert kinds == {"insert", "modify", "remove", "ttl-expire"}
    assert {shard for _, shard in stream.records} == {PARENT, CHILD}


def test_reference_documents_follow_the_projection():
    section = SearchSection(url="http://x", rename={"status": "state"}, exclude=["blob"], decimals="string")
    item = {"pk": "a", "sk": Decimal(1), "status": "new", "blob": b"x", "qty": Decimal("1.50")}
    stream = Stream([], {("a", Decimal(1)): item}, {})
    assert expected_documents(stream, section) == {"a|1": {"pk": "a", "sk": "1", "state": "new", "qty": "1.50"}}
    expired = Stream([], {("a", Decimal(1)): None}, {("a", Decimal(1)): item})
    assert expected_documents(expired, section) == {}
    marked = expected_documents(expired, replace(section, ttl_policy="mark", decimals="number"))
    assert marked == {
        "a|1": {"pk": "a", "sk": Decimal(1), "state": "new", "qty": Decimal("1.5"), "_stream": {"expired": True}}
    }
