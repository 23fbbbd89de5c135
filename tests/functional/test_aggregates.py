"""The aggregates sink against moto (server mode): layout, deltas, redelivery, crashes, contention.

Records are built with :func:`worker.shapes.build` from a small model of the
source table (moto's stream differs from DynamoDB's; see the fault-injection
module for the randomized version of these scenarios).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from decimal import Decimal as D
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from worker.app import build_sinks
from worker.aws import client
from worker.config import AggregateSection, AwsSection, Config
from worker.decode import decode
from worker.diff import diff
from worker.errors import FatalError, RetryableError
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.shapes import build
from worker.sinks import aggregates
from worker.sinks.aggregates.sink import LOCAL_SHARD, AggregatesSink
from worker.sinks.aggregates.spec import recompute
from worker.sinks.aggregates.store import ensure_table, hwm_entry, query_rows
from worker.testing import MemoryDeadLetters

SHARD = "shardId-00000001763780400000-aaaa0001"
BY_STATUS = AggregateSection(
    name="orders_by_status",
    table="OrderStats",
    group_by=["status"],
    where={"channel": "web"},
    metrics={"orders": "count", "revenue": "sum(total)"},
)
BY_CITY = AggregateSection(
    name="by_city",
    table="OrderStats",
    group_by=["ship.city"],
    metrics={"n": "count", "revenue": "sum(total)"},
    missing_group="null",
)
SECTIONS = [BY_STATUS, BY_CITY]


def make_cfg(url: str, sections: Sequence[AggregateSection] = SECTIONS) -> Config:
    return Config(aws=AwsSection(endpoint_url=url), aggregates=list(sections))


class Stream:
    """A source table and the records a DynamoDB stream would carry for it (one shard)."""

    def __init__(self, shard: str | None = SHARD, seq: int = 10**38 + 7) -> None:
        self.shard = shard
        self.seq = seq
        self.items: dict[str, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []

    def _emit(self, event: str, key: str, old: Any, new: Any, ttl: bool = False) -> None:
        self.seq += 1013
        self.records.append(build(event, {"id": key}, old=old, new=new, sequence=self.seq, ttl=ttl))
        if new is None:
            self.items.pop(key, None)
        else:
            self.items[key] = new

    def put(self, key: str, **attrs: Any) -> None:
        old = self.items.get(key)
        self._emit("MODIFY" if old else "INSERT", key, old, {"id": key, **attrs})

    def update(self, key: str, **changes: Any) -> None:
        old = self.items[key]
        self._emit("MODIFY", key, old, {**old, **changes})

    def delete(self, key: str, ttl: bool = False) -> None:
        self._emit("REMOVE", key, self.items[key], None, ttl)

    def raws(self, records: Sequence[dict[str, Any]] | None = None) -> list[RawRecord]:
        recs = self.records if records is None else records
        return [RawRecord(r, f"test:{r['dynamodb']['SequenceNumber']}", self.shard) for r in recs]

    def changes(self, records: Sequence[dict[str, Any]] | None = None) -> list[Any]:
        return [diff(decode(r)) for r in self.raws(records)]


def orders() -> Stream:
    s = Stream()
    s.put("o1", status="pending", channel="web", total=D("10.50"), ship={"city": "Paris"})
    s.put("o2", status="pending", channel="web", total=D("5"))
    s.put("o3", status="paid", channel="app", total=D("7.25"), ship={"city": "Lyon"})
    s.update("o1", status="paid")  # moves its count and revenue
    s.update("o2", note="called")  # no aggregate change
    s.put("o2", status="pending", channel="web", total=D("5"), note="called")  # identical re-put: a no-op
    s.put("o4", status="paid", channel="web", total=D("100.01"), ship={"city": "Paris"})
    s.update("o3", channel="web")  # enters the filtered aggregate
    s.delete("o4")
    s.put("o5", status="shipped", channel="web", total=D("3500.11"), ship={"city": "Oslo"})
    s.delete("o5", ttl=True)
    s.put("o6", status="paid", channel="web", total=D("0.10"), ship={"city": "Paris"})
    return s


def expected(stream: Stream, sections: Sequence[AggregateSection] = SECTIONS) -> dict[str, Any]:
    return {a.name: recompute(a, stream.items.values()) for a in sections}


def feed(sink: AggregatesSink, changes: Sequence[Any]) -> None:
    for c in changes:
        sink.add(c)


@pytest.fixture
def cfg(moto_url: str) -> Config:
    return make_cfg(moto_url)


@pytest.fixture
def sink(cfg: Config) -> AggregatesSink:
    return aggregates.create(cfg, provision=True)


class Flaky:
    """A real client whose ``update_item`` fails on chosen calls: before or after reaching moto."""

    def __init__(self, real: Any, fail: dict[int, str]) -> None:
        self.real = real
        self.fail = fail  # call number -> "throttle" | "lost" | "crash"
        self.updates = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def update_item(self, **kwargs: Any) -> Any:
        with self.lock:
            self.updates += 1
            how = self.fail.get(self.updates)
        if how == "throttle":
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")
        resp = self.real.update_item(**kwargs)
        if how == "lost":
            raise ReadTimeoutError(endpoint_url="moto")
        if how == "crash":
            raise KeyboardInterrupt("the process dies after this write")
        return resp


# -- results ----------------------------------------------------------------------------------


def test_pipeline_results_equal_the_recomputation(sink: AggregatesSink) -> None:
    s = orders()
    pipeline = Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(sleep=no_sleep))
    pipeline.process(s.raws())
    report = sink.report()
    assert report == expected(s)
    assert report["orders_by_status"] == [
        {"group": {"status": "paid"}, "metrics": {"orders": 3, "revenue": "17.85"}},
        {"group": {"status": "pending"}, "metrics": {"orders": 1, "revenue": "5"}},
    ]
    assert report["by_city"][-1] == {"group": {"ship.city": None}, "metrics": {"n": 1, "revenue": "5"}}


def test_one_write_per_touched_row_per_flush(sink: AggregatesSink) -> None:
    s = Stream()
    for i in range(40):
        s.put(f"o{i}", status=["paid", "pending"][i % 2], channel="web", total=D(i), ship={"city": "Paris"})
    feed(sink, s.changes())
    sink.flush()
    assert sink.stats.writes == 3  # paid, pending, Paris
    assert sink.report() == expected(s)


def test_a_cache_smaller_than_a_flush(cfg: Config, sink: AggregatesSink) -> None:
    s = orders()
    changes = s.changes()
    small = AggregatesSink(client(cfg, "dynamodb"), SECTIONS, cache_rows=1)
    for part in (changes[:6], changes[3:]):
        feed(small, part)
        small.flush()
    assert small.report() == expected(s)


def test_row_layout(sink: AggregatesSink, cfg: Config) -> None:
    s = orders()
    feed(sink, s.changes())
    sink.flush()
    rows = {r["sk"]: r for r in query_rows(client(cfg, "dynamodb"), "OrderStats", "orders_by_status")}
    paid = rows['["paid"]']
    assert paid["pk"] == "orders_by_status" and paid["group"] == {"status": "paid"}
    assert paid["count"] == paid["orders"] == 3 and paid["revenue"] == D("17.85")
    assert set(paid["hwm"]) == {SHARD} and paid["hwm"][SHARD].split("@")[0] == f"{s.seq:040d}"
    assert paid["updated_at"].endswith("+00:00")
    # A group that emptied keeps its row at zero (its marks must outlive it) and is not reported.
    shipped = rows['["shipped"]']
    assert shipped["count"] == 0 and shipped["revenue"] == 0
    assert all(e["group"] != {"status": "shipped"} for e in sink.report()["orders_by_status"])


def test_non_numeric_sum_is_parked_and_adds_zero(sink: AggregatesSink) -> None:
    s = orders()
    s.update("o6", total="0.10 EUR")
    dead = MemoryDeadLetters()
    Pipeline([sink], dead, retry=RetryPolicy(sleep=no_sleep)).process(s.raws())
    (parked,) = dead.parked
    assert parked.sink == "aggregates" and parked.field == "dynamodb.NewImage.total"
    assert parked.where == f"{SHARD}/{s.seq}" and parked.payload == s.records[-1]
    report = sink.report()
    assert report == expected(s)
    paid = next(e for e in report["orders_by_status"] if e["group"] == {"status": "paid"})
    assert paid["metrics"] == {"orders": 3, "revenue": "17.75"}  # o6 counted, its total as 0


# -- exactly once -------------------------------------------------------------------------------


def test_redelivery_with_other_batch_boundaries(cfg: Config, sink: AggregatesSink) -> None:
    s = orders()
    changes = s.changes()
    for start in range(0, len(changes), 5):
        feed(sink, changes[start : start + 5])
        sink.flush()
    for size in (1, 2, 3, 7, len(changes)):  # restarts from older checkpoints, other boundaries
        again = aggregates.create(cfg)
        for start in range(size // 2, len(changes), size):
            feed(again, changes[start : start + size])
            again.flush()
        assert again.stats.writes == 0
    assert sink.report() == expected(s)


def test_a_row_that_applied_a_prefix_gets_the_rest(cfg: Config, sink: AggregatesSink) -> None:
    s = Stream()
    for i in range(6):
        s.put(f"o{i}", status="paid", channel="web", total=D(i + 1))
    changes = s.changes()
    feed(sink, changes[:4])
    sink.flush()
    again = aggregates.create(cfg)  # crashed before the checkpoint: the next owner has all six
    feed(again, changes)
    again.flush()
    assert again.stats.writes == 2  # ["paid"] and by_city's [null], each with records 5 and 6 only
    assert sink.report() == expected(s)


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_crash_between_rows_then_restart(cfg: Config, crash_at: int) -> None:
    s = orders()
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    first = AggregatesSink(Flaky(real, {crash_at: "crash"}), SECTIONS, concurrency=1)
    feed(first, s.changes())
    with pytest.raises(KeyboardInterrupt):
        first.flush()
    restarted = AggregatesSink(real, SECTIONS)
    feed(restarted, s.changes())
    restarted.flush()
    assert restarted.report() == expected(s)


def test_retryable_failures_keep_the_buffer_and_never_apply_twice(cfg: Config) -> None:
    s = orders()
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    flaky = Flaky(real, {2: "throttle", 4: "lost"})
    sink = AggregatesSink(flaky, SECTIONS, concurrency=1)
    feed(sink, s.changes())
    retry = RetryPolicy(attempts=5, sleep=no_sleep)
    retry.call(sink.flush, "flush")
    assert sink.stats.conflicts == 1  # the lost response: the write had landed
    assert sink.report() == expected(s)


def test_two_workers_on_one_shard(cfg: Config) -> None:
    s = Stream()
    for i in range(8):
        s.put(f"o{i}", status=["paid", "pending"][i % 2], channel="web", total=D(i), ship={"city": "Oslo"})
    changes = s.changes()
    aggregates.create(cfg, provision=True)
    a = aggregates.create(cfg)
    b = aggregates.create(cfg)
    feed(a, changes[:3])
    a.flush()
    feed(b, changes[:3])
    b.flush()  # reads: everything applied already
    assert b.stats.writes == 0 and b.stats.already_applied == 3
    feed(a, changes[3:6])
    a.flush()
    feed(b, changes[2:8])  # b's cached marks are stale; it overlaps a's flush and goes beyond it
    b.flush()
    assert b.stats.conflicts == 3 and b.stats.writes == 3
    feed(a, changes[6:8])
    a.flush()  # a is behind now: its conditions fail, nothing is left to apply
    assert a.stats.conflicts == 3
    assert a.report() == expected(s)


def test_parallel_row_writes_with_a_crash(cfg: Config) -> None:
    s = Stream()
    for i in range(120):
        s.put(f"o{i}", status=f"st{i % 40}", channel="web", total=D(i).scaleb(-2), ship={"city": f"c{i % 30}"})
    for i in range(0, 120, 3):
        s.update(f"o{i}", status="paid")
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    first = AggregatesSink(Flaky(real, {17: "crash"}), SECTIONS, concurrency=8)
    feed(first, s.changes())
    with pytest.raises(KeyboardInterrupt):
        first.flush()
    assert first.stats.writes == 70  # every other row settled before the crash surfaced
    first.close()
    second = AggregatesSink(real, SECTIONS, concurrency=8)
    feed(second, s.changes())
    second.flush()
    second.close()
    assert second.report() == expected(s)


def test_records_without_a_shard_use_the_pseudo_shard(cfg: Config, sink: AggregatesSink) -> None:
    s = orders()
    s.shard = None
    for _ in range(2):  # a fixture replayed twice into the same tables
        again = aggregates.create(cfg)
        feed(again, s.changes())
        again.flush()
    rows = query_rows(client(cfg, "dynamodb"), "OrderStats", "orders_by_status")
    assert all(set(r["hwm"]) == {LOCAL_SHARD} for r in rows)
    assert sink.report() == expected(s)


def test_marks_of_old_shards_are_pruned(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    now = [1_763_780_400.0]
    s = orders()
    hours = 3600.0
    for gen, (shard, records) in enumerate(
        [("shard-a", s.records[:4]), (None, s.records[4:8]), ("shard-b", s.records[8:])]
    ):
        now[0] += gen * 20 * hours
        s.shard = shard
        sink = AggregatesSink(real, SECTIONS, clock=lambda: now[0])
        feed(sink, s.changes(records))
        sink.flush()
    paid = next(r for r in query_rows(real, "OrderStats", "orders_by_status") if r["sk"] == '["paid"]')
    # shard-a was written 60 h before shard-b's write (> 30 h): pruned; the pseudo-shard is kept.
    assert set(paid["hwm"]) == {LOCAL_SHARD, "shard-b"}
    assert paid["hwm"]["shard-b"] == hwm_entry(s.seq, now[0])  # o6 (paid) is the last record
    assert AggregatesSink(real, SECTIONS).report() == expected(s)


def test_a_mark_refreshed_meanwhile_is_not_pruned(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    now = [1_763_780_400.0]
    s = Stream()
    for i in range(8):
        s.put(f"o{i}", status="paid", channel="web", total=D(i), ship={"city": "Oslo"})
    x = s.changes(s.records[0:2])
    s.shard = "shard-y"
    y = s.changes(s.records[2:4])
    y_later = s.changes(s.records[6:8])
    s.shard = SHARD
    x_later = s.changes(s.records[4:6])

    def sink() -> AggregatesSink:
        # b keeps planning from its cached rows (as it would within reread_seconds of reading them)
        return AggregatesSink(real, SECTIONS, clock=lambda: now[0], reread_seconds=float("inf"))

    feed(first := sink(), x)
    first.flush()
    feed(b := sink(), y)
    b.flush()  # b caches the rows with SHARD's mark written at t0
    now[0] += 31 * 3600
    feed(second := sink(), x_later)
    second.flush()  # SHARD is alive: its mark is written again at t0 + 31 h
    feed(b, y_later)
    b.flush()  # b's cache says SHARD's mark is stale; the conditional removal is refused
    assert b.stats.conflicts == 2 and b.stats.writes == 4  # ["paid"] and ["Oslo"]: refused once, then written
    rows = query_rows(real, "OrderStats", "orders_by_status")
    assert all(set(r["hwm"]) == {SHARD, "shard-y"} for r in rows)
    assert b.report() == expected(s)


# -- tables --------------------------------------------------------------------------------------


def test_tables_are_checked_or_provisioned(moto_url: str) -> None:
    cfg = make_cfg(moto_url, [BY_STATUS])
    with pytest.raises(FatalError, match="does not exist"):
        aggregates.create(cfg)
    (sink,) = build_sinks(cfg, provision=True)
    assert sink.name == "aggregates"
    aggregates.create(cfg)  # exists now
    real = client(cfg, "dynamodb")
    real.create_table(
        TableName="Wrong",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wrong = AggregateSection(name="w", table="Wrong", group_by=["status"], metrics={"n": "count"})
    with pytest.raises(FatalError, match="must have keys pk"):
        aggregates.create(make_cfg(moto_url, [wrong]), provision=True)


def test_a_missing_table_at_write_time_stops(cfg: Config) -> None:
    sink = AggregatesSink(client(cfg, "dynamodb"), SECTIONS)
    feed(sink, orders().changes())
    with pytest.raises(FatalError, match="table not found"):
        sink.flush()


def test_throttling_surfaces_as_retryable(cfg: Config) -> None:
    aggregates.create(cfg, provision=True)
    sink = AggregatesSink(Flaky(client(cfg, "dynamodb"), {1: "throttle"}), SECTIONS, concurrency=1)
    feed(sink, orders().changes())
    with pytest.raises(RetryableError):
        sink.flush()
    sink.flush()
    assert sink.report() == expected(orders())


# -- the bundled fixture ---------------------------------------------------------------------------


def test_bundled_fixture_matches_the_recomputation_even_when_replayed(moto_url: str) -> None:
    from pathlib import Path

    from worker.config import load
    from worker.sources.fixtures import read

    root = Path(__file__).resolve().parents[2]
    fixture = root / "config" / "fixtures" / "orders.jsonl"
    sections = load(root / "config" / "local.toml", env={}).aggregates
    real = client(make_cfg(moto_url, sections), "dynamodb")
    for table in {a.table for a in sections}:
        ensure_table(real, table, create=True)
    items: dict[str, Any] = {}
    for raw in read([fixture]):
        record = decode(raw)
        key = repr(sorted(record.keys.items()))
        if record.new_image is None:
            items.pop(key, None)
        else:
            items[key] = record.new_image
    for _ in range(2):  # `worker local` run twice against the same tables
        sink = AggregatesSink(real, sections)
        Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(sleep=no_sleep)).process(read([fixture]))
    report = sink.report()
    assert report == {a.name: recompute(a, items.values()) for a in sections}
    assert all(report.values())


def test_38_digit_group_values_differing_in_the_last_digit_are_two_groups(moto_url: str) -> None:
    by_code = AggregateSection(name="by_code", table="CodeStats", group_by=["code"], metrics={"n": "count"})
    sink = aggregates.create(make_cfg(moto_url, [by_code]), provision=True)
    s = Stream()
    s.put("a", code=D("12345678901234567890123456789012345671"))
    s.put("b", code=D("12345678901234567890123456789012345672"))
    s.put("c", code=D("12345678901234567890123456789012345672"))
    feed(sink, s.changes())
    sink.flush()
    rows = sorted(sink.report()["by_code"], key=lambda r: str(r["group"]["code"]))
    # Written out by hand: 38 digits are beyond a 28-digit context, so a rounding one would merge them.
    assert rows == [
        {"group": {"code": "12345678901234567890123456789012345671"}, "metrics": {"n": 1}},
        {"group": {"code": "12345678901234567890123456789012345672"}, "metrics": {"n": 2}},
    ]


# -- transactions ----------------------------------------------------------------------------------


def many_groups(n: int) -> Stream:
    s = Stream()
    for i in range(n):
        s.put(f"o{i}", status=f"s{i}", channel="web", total=D(i) / 4, ship={"city": "Paris"})
    return s


class LosesTransactions:
    """A real client whose ``transact_write_items`` commits in moto, then loses the answer on chosen calls."""

    def __init__(self, real: Any, lose: set[int]) -> None:
        self.real = real
        self.lose = lose
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions += 1
        resp = self.real.transact_write_items(**kwargs)
        if self.transactions in self.lose:
            raise ReadTimeoutError(endpoint_url="moto")
        return resp


def test_a_large_flush_goes_in_transactions_and_redelivery_applies_nothing(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    s = many_groups(250)  # 250 status rows + 1 city row: 251 rows, in 3 transactions of 84, 84 and 83
    # One transaction at a time: moto copies a table before each transaction and restores it on a
    # cancellation, which is not safe beside concurrent writes (DynamoDB's are; the fault schedules
    # run the sink's parallel writers with calls into moto serialized).
    sink = AggregatesSink(real, SECTIONS, transaction_rows=100, concurrency=1)
    feed(sink, s.changes())
    sink.flush()
    assert (sink.stats.transactions, sink.stats.writes, sink.stats.conflicts) == (3, 251, 0)
    assert sink.report() == expected(s)
    feed(sink, s.changes())  # the same records again, into the sink that wrote them (derived states)
    sink.flush()
    assert (sink.stats.transactions, sink.stats.already_applied) == (3, 251)
    fresh = AggregatesSink(
        real, SECTIONS, transaction_rows=100, concurrency=1
    )  # a restarted worker: reads, writes nothing
    feed(fresh, s.changes())
    fresh.flush()
    assert (fresh.stats.reads, fresh.stats.writes, fresh.stats.already_applied) == (251, 0, 251)
    assert fresh.report() == expected(s)


def test_a_transaction_whose_answer_was_lost_is_not_applied_twice(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    s = many_groups(30)  # 31 rows: one transaction
    lossy = LosesTransactions(real, lose={1})
    sink = AggregatesSink(lossy, SECTIONS, transaction_rows=10)
    pipeline = Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(sleep=no_sleep))
    pipeline.process(s.raws())
    # The retried flush plans the lost transaction's rows from the states read before it: every
    # condition fails (cancelling the transaction), the rows are re-read and found applied.
    stats = sink.stats
    assert (stats.transactions, stats.conflicts, stats.already_applied, stats.writes) == (2, 31, 31, 0)
    assert sink.report() == expected(s)


def test_a_conflicting_row_cancels_its_transaction_and_the_others_are_written_again(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    s = many_groups(12)
    sink = AggregatesSink(real, SECTIONS, transaction_rows=2, concurrency=1)
    feed(sink, s.changes(s.records[:2]))
    sink.flush()  # o0, o1: rows s0, s1, Paris (Paris's state now derived, its mark at o1)
    other = AggregatesSink(real, SECTIONS)  # another worker on the shard (a lease moved) applies o0..o5
    feed(other, s.changes(s.records[:6]))
    other.flush()
    feed(sink, s.changes(s.records[2:]))
    sink.flush()
    # s2..s5 are unknown, read, found applied; Paris is planned from o2 up on a stale state: its
    # condition fails and cancels the transaction (s6..s11 not tried); then Paris is re-read and
    # the 7 rows are written in a second transaction.
    stats = sink.stats
    assert (stats.already_applied, stats.conflicts, stats.transactions, stats.writes) == (4, 1, 3, 3 + 7)
    assert sink.report() == expected(s)


def test_a_state_derived_from_transactions_is_read_again_after_reread_seconds(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    now = [1_763_780_400.0]
    s = many_groups(4)
    sink = AggregatesSink(real, SECTIONS, clock=lambda: now[0], transaction_rows=1, reread_seconds=3600)
    feed(sink, s.changes())
    sink.flush()
    assert sink.stats.reads == 5  # 4 statuses and Paris, unknown at first
    s.update("o1", total=D(9))
    feed(sink, s.changes(s.records[-1:]))
    now[0] += 3599
    sink.flush()
    assert sink.stats.reads == 5  # within the hour: planned from the derived states
    s.update("o1", total=D(10))
    feed(sink, s.changes(s.records[-1:]))
    now[0] += 2
    sink.flush()
    assert sink.stats.reads == 7  # s1 and Paris read again: their last read is over an hour old
    assert sink.report() == expected(s)


def test_reads_of_many_unknown_rows_go_in_parallel_batches(cfg: Config) -> None:
    real = client(cfg, "dynamodb")
    aggregates.create(cfg, provision=True)
    s = many_groups(250)
    first = AggregatesSink(real, SECTIONS, transaction_rows=0)  # 251 single UpdateItems, 8 at a time
    feed(first, s.changes())
    first.flush()
    restarted = AggregatesSink(real, SECTIONS, transaction_rows=0)
    feed(restarted, s.changes())
    restarted.flush()  # 251 rows read in 3 BatchGetItems side by side: every one found applied
    assert (restarted.stats.reads, restarted.stats.already_applied, restarted.stats.writes) == (251, 251, 0)
    assert restarted.report() == expected(s)
