"""Fault injection: randomized schedules against moto (server mode), zero mismatches allowed.

Each schedule (seeded, reproducible: the failure names its seed):

* random operations on a model of the source table (inserts, puts over existing
  items, updates of group/filter/summed attributes, identical re-puts, deletes,
  TTL expirations, non-numeric totals, missing group attributes) produce stream
  records, built with :func:`worker.shapes.build` (moto's stream differs from
  DynamoDB's: duplicate INSERTs, never splits, no TTL). Records go to one or two
  lanes of shards that roll over (a child starts after its parent is done, as
  KCL does); sequence numbers are 21 to 40 digits;
* each shard is processed through the real :class:`~worker.pipeline.Pipeline`
  in random batch sizes; the DynamoDB client of each worker crashes the
  process at a random call (before or after the call reached the server: between
  rows, between a read and a write), throttles, or loses responses after the
  write happened; a successful batch may still crash before its checkpoint;
* a restarted worker starts from the last checkpoint with an empty cache; the
  crashed one sometimes lives on as a zombie holding the same shard: it resumes
  its interrupted flush or processes batches from its own position, in the
  middle of the new owner's flushes (between two of its calls), never
  checkpointing;
* the sink writes rows in parallel at the production concurrency (8), so a fault
  hits one write while the flush's other writes succeed (a partial failure);
* failures are budgeted in time on a simulated clock (:class:`tests.simclock.SimClock`,
  the retry policy's clock and sleep): outages of 1 to 14 minutes are waited out,
  longer ones stop the worker without a checkpoint (a restart follows); throttling
  storms send ``Retry-After``; hung calls spend a 30 s read timeout each;
* at the end every aggregate row equals the recomputation from the final items
  (rows of groups that emptied are all zero) and every row's ``count`` equals its
  count metrics.

A schedule is reproducible from its seed up to the interleaving of the parallel writes.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from tests.simclock import SimClock
from worker.aws import client
from worker.config import AggregateSection, AwsSection, Config
from worker.log import get_logger
from worker.pipeline import Pipeline, StopProcessing
from worker.records import RawRecord
from worker.retry import RetryPolicy
from worker.shapes import build
from worker.sinks.aggregates.sink import AggregatesSink, report_rows
from worker.sinks.aggregates.spec import compile_aggregate, recompute
from worker.sinks.aggregates.store import COUNT, ensure_table, query_rows
from worker.sinks.aggregates.wire import wire_client
from worker.testing import MemoryDeadLetters

SCHEDULES = int(os.environ.get("AGGREGATES_SCHEDULES", "1000"))
CHUNKS = 8
CONCURRENCY = 8  # the sink's production default
READ_TIMEOUT = 30.0  # what a hung call costs on the simulated clock
# Thousands of retries and parks: logged nowhere (their counts are asserted instead).
QUIET = get_logger("tests.aggregates_faults.quiet")
logging.getLogger(QUIET.name).setLevel(logging.CRITICAL + 1)

TEMPLATES = [
    AggregateSection(
        name="by_status",
        table="FaultStats",
        group_by=["status"],
        where={"channel": "web"},
        metrics={"orders": "count", "revenue": "sum(total)"},
    ),
    AggregateSection(
        name="by_city",
        table="FaultStats",
        group_by=["ship.city", "status"],
        metrics={"n": "count", "revenue": "sum(total)", "qty": "sum(qty)"},
        missing_group="null",
    ),
    AggregateSection(
        name="coupons",
        table="FaultCoupons",
        group_by=["channel"],
        where={"coupon": {"exists": True}},
        metrics={"count": "count", "discount": "sum(coupon.amount)"},
    ),
]


class Crash(BaseException):
    """The worker process dies here (not an Exception: nothing catches it on the way out)."""


# -- the source table ----------------------------------------------------------------------


@dataclass
class Shard:
    id: str
    parent: str | None
    records: list[dict[str, Any]] = field(default_factory=list)


class Source:
    """A model of the source table and the stream records DynamoDB would deliver for it."""

    def __init__(self, rng: random.Random, lanes: int) -> None:
        self.rng = rng
        self.items: dict[str, dict[str, Any]] = {}
        self.seq = rng.choice([10**20, 10**29, 10**38, 10**39]) + rng.randrange(10**6)
        self.shards: list[Shard] = []
        self.open = [self._shard(lane, None) for lane in range(lanes)]

    def _shard(self, lane: int, parent: str | None) -> Shard:
        shard = Shard(f"shardId-{lane}-{len(self.shards):04d}-{self.seq % 99991:05d}", parent)
        self.shards.append(shard)
        return shard

    def item(self, key: str) -> dict[str, Any]:
        r = self.rng
        item: dict[str, Any] = {"id": key, "channel": r.choice(["web", "web", "app"]), "qty": Decimal(r.randint(1, 5))}
        if r.random() < 0.9:
            item["status"] = r.choice(["pending", "paid", "shipped"])
        roll = r.random()
        if roll < 0.85:
            item["total"] = Decimal(r.randint(0, 10**6)).scaleb(-2)
        elif roll < 0.95:
            item["total"] = "n/a"  # non-numeric: parked, adds 0
        if r.random() < 0.75:
            item["ship"] = {"city": r.choice(["Paris", "Lyon", "Oslo"])} if r.random() < 0.9 else {}
        if r.random() < 0.3:
            item["coupon"] = {"code": "C", "amount": Decimal(r.randint(1, 2000)).scaleb(-2)}
        return item

    def changed(self, old: dict[str, Any]) -> dict[str, Any]:
        r = self.rng
        new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in old.items()}
        for _ in range(r.randint(1, 2)):
            what = r.choice(["status", "channel", "total", "city", "coupon", "qty", "note"])
            fresh = self.item(old["id"])
            if what == "city":
                new["ship"] = fresh.get("ship", {"city": "Oslo"})
            elif what == "coupon":
                new.pop("coupon", None) if "coupon" in new else new.update(coupon={"code": "D", "amount": Decimal(5)})
            elif what == "note":
                new["note"] = f"n{r.randint(0, 9)}"
            elif what in fresh:
                new[what] = fresh[what]
            else:
                new.pop(what, None)
        return new

    def step(self) -> None:
        r = self.rng
        roll = r.random()
        keys = sorted(self.items)
        if roll < 0.04:
            lane = r.randrange(len(self.open))
            self.open[lane] = self._shard(lane, self.open[lane].id)
            return
        if roll < 0.35 or not keys:
            key = f"o{r.randint(0, 14)}"  # a small key space: puts over existing items happen
            old = self.items.get(key)
            new = self.item(key)
            self.emit("MODIFY" if old else "INSERT", key, old, new)
        elif roll < 0.75:
            key = r.choice(keys)
            self.emit("MODIFY", key, self.items[key], self.changed(self.items[key]))
        elif roll < 0.8:
            key = r.choice(keys)
            self.emit("MODIFY", key, self.items[key], dict(self.items[key]))  # identical re-put
        else:
            key = r.choice(keys)
            self.emit("REMOVE", key, self.items[key], None, ttl=r.random() < 0.4)

    def emit(
        self, event: str, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None, ttl: bool = False
    ) -> None:
        self.seq += self.rng.randint(1, 10**5)
        lane = int(key[1:]) % len(self.open)
        self.open[lane].records.append(build(event, {"id": key}, old=old, new=new, sequence=self.seq, ttl=ttl))
        if new is None:
            self.items.pop(key, None)
        else:
            self.items[key] = new


# -- workers ----------------------------------------------------------------------------------


@dataclass
class Faults:
    rng: random.Random
    sim: SimClock
    counts: dict[str, int]  # the schedule's tally of injected faults
    crash_at: int | None = None  # crash at this call number
    crash_after: bool = False  # ... after the call reached the server
    throttle: float = 0.0
    lost: float = 0.0  # the call happened but its response was lost
    hang: float = 0.0  # the call hangs until its read timeout (before or after reaching the server)
    down_until: float = 0.0  # an outage: every call fails to connect until this simulated time
    storm: int = 0  # a throttling storm: this many next calls are throttled, with Retry-After
    hook: Callable[[], None] | None = None  # runs between calls (a zombie's step)
    hook_rate: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # the sink's writer threads share the rng
    # moto's threaded server applies a conditional UpdateItem without locking the item (two
    # concurrent writers can both pass the condition: seen as a double count with a zombie
    # writing beside its successor); DynamoDB's are atomic. Calls into moto are therefore
    # serialized per schedule (the emulator's limit, not the sink's): rows are still written
    # from the sink's threads, interleaved call by call, with faults hitting single rows.
    emulator: threading.Lock = field(default_factory=threading.Lock)

    def chance(self, p: float) -> bool:
        if p <= 0:
            return False
        with self.lock:
            return self.rng.random() < p

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


def throttled(name: str, code: str, retry_after: str | None) -> ClientError:
    headers = {"retry-after": retry_after} if retry_after else {}
    meta = {"HTTPStatusCode": 400, "HTTPHeaders": headers}
    return ClientError({"Error": {"Code": code, "Message": "slow down"}, "ResponseMetadata": meta}, name)


def cancelled(actions: int, f: Faults) -> ClientError:
    """A cancelled transaction as DynamoDB reports it: one reason per action, ``None`` for the innocent."""
    with f.lock:
        culprit = f.rng.randrange(actions)
        code = f.rng.choice(["TransactionConflict", "ThrottlingError"])
    reasons = [{"Code": code if i == culprit else "None"} for i in range(actions)]
    error = {"Code": "TransactionCanceledException", "Message": f"Transaction cancelled [{code}]"}
    meta = {"HTTPStatusCode": 400, "HTTPHeaders": {}}
    return ClientError({"Error": error, "CancellationReasons": reasons, "ResponseMetadata": meta}, "TransactWriteItems")  # type: ignore[typeddict-unknown-key]


class FaultyClient:
    """A real boto3 client (to moto) wrapped to crash, throttle, hang, fail to connect and
    lose responses on cue; thread-safe (the sink writes rows from a pool)."""

    def __init__(self, real: Any, faults: Faults) -> None:
        self.real = real
        self.faults = faults
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)
        f = self.faults

        def call(**kwargs: Any) -> Any:
            with f.lock:
                self.calls += 1
                number = self.calls
            if f.hook is not None and f.chance(f.hook_rate):
                f.hook()
            crash = f.crash_at == number
            if crash and not f.crash_after:
                raise Crash(f"before {name}")
            if f.sim() < f.down_until:
                f.count("outage calls")
                raise EndpointConnectionError(endpoint_url="http://moto")
            storm = False
            with f.lock:
                if f.storm > 0:
                    f.storm -= 1
                    storm = True
            if storm:
                f.count("storm calls")
                raise throttled(name, "ThrottlingException", "3")
            if f.chance(f.throttle):
                f.count("throttled")
                if name in ("update_item", "transact_write_items"):  # one write of a parallel flush fails
                    f.count("failed parallel writes")
                raise throttled(name, "ProvisionedThroughputExceededException", None)
            if name == "transact_write_items" and f.chance(f.throttle):
                f.count("injected cancellations")  # DynamoDB's: another write held a row, or one was throttled
                raise cancelled(len(kwargs["TransactItems"]), f)
            if f.chance(f.hang / 2):
                f.count("hung")
                f.sim.advance(READ_TIMEOUT)
                raise ReadTimeoutError(endpoint_url="http://moto")
            with f.emulator:
                try:
                    resp = fn(**kwargs)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                        f.count("cancelled transactions")  # moto's: a row's condition failed
                    raise
            if name == "transact_write_items":
                f.count("transactions")
            if crash:
                raise Crash(f"after {name}")
            if f.chance(f.hang / 2):
                f.count("hung")
                f.sim.advance(READ_TIMEOUT)
                raise ReadTimeoutError(endpoint_url="http://moto")
            if f.chance(f.lost):
                f.count("lost")
                raise ReadTimeoutError(endpoint_url="moto")
            return resp

        return call


@dataclass
class Worker:
    shard: Shard
    position: int  # index of the next record to process
    client: FaultyClient
    pipeline: Pipeline
    interrupted: bool = False  # a flush was cut short (a zombie resumes it)
    steps_left: int = 0  # for zombies


class Schedule:
    def __init__(self, seed: int, real: Any) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.real = real
        # Tables of its own: moto copies every table a transaction touches (to undo a cancelled
        # one), so tables shared by a whole chunk of schedules would make each call slower.
        self.aggregates = [replace(t, name=f"s{seed}_{t.name}", table=f"{t.table}{seed}") for t in TEMPLATES]
        for table in sorted({a.table for a in self.aggregates}):
            ensure_table(real, table, create=True)
        self.source = Source(self.rng, lanes=self.rng.choice([1, 2]))
        for _ in range(self.rng.randint(6, 24)):
            self.source.step()
        self.checkpoints = {s.id: 0 for s in self.source.shards}
        self.owners: dict[str, Worker] = {}
        self.zombies: list[Worker] = []
        self.faults_on = True
        self.parked = 0
        self.sim = SimClock()
        self.counts: dict[str, int] = {}
        self.workers: list[Worker] = []
        self.zombie_lock = threading.Lock()
        self.emulator = threading.Lock()

    def worker(self, shard: Shard, position: int, *, zombie: bool) -> Worker:
        faults = Faults(self.rng, self.sim, self.counts, throttle=0.03, lost=0.03, hang=0.01, emulator=self.emulator)
        if not zombie:
            faults.hook, faults.hook_rate = self.zombie_step, 0.2
        c = FaultyClient(wire_client(self.real), faults)  # the production client: its lean calls
        # Single UpdateItems (these flushes write fewer than 100 rows), or transactions from 1 or 2 rows.
        rows = self.rng.choice([100, 1, 2])
        sink = AggregatesSink(c, self.aggregates, concurrency=CONCURRENCY, transaction_rows=rows, log=QUIET)
        dead = MemoryDeadLetters()
        retry = RetryPolicy(sleep=self.sim.sleep, clock=self.sim, rng=random.Random(self.rng.random()))
        w = Worker(shard, position, c, Pipeline([sink], dead, retry=retry, log=QUIET))
        w.steps_left = self.rng.randint(1, 4) if zombie else 0
        self.workers.append(w)
        return w

    def stopped(self, exc: StopProcessing) -> None:
        """A worker that spent its failure budget stops (nothing acknowledged): like a crash."""
        if "gave up after" not in str(exc):
            raise exc
        self.counts["budget stops"] = self.counts.get("budget stops", 0) + 1

    def batch(self, w: Worker) -> list[RawRecord]:
        size = self.rng.randint(1, 8)
        records = w.shard.records[w.position : w.position + size]
        return [RawRecord(r, f"{w.shard.id}/{r['dynamodb']['SequenceNumber']}", w.shard.id) for r in records]

    def arm(self, w: Worker) -> None:
        f = w.client.faults
        f.crash_at = None
        if self.faults_on and self.rng.random() < 0.35:
            f.crash_at = w.client.calls + self.rng.randint(1, 6)
            f.crash_after = self.rng.random() < 0.5
        if self.faults_on and self.rng.random() < 0.04:  # an outage of minutes; past 15 the worker stops
            minutes = self.rng.uniform(1, 14) if self.rng.random() < 0.75 else self.rng.uniform(16, 40)
            f.down_until = self.sim() + minutes * 60
            self.counts["outages"] = self.counts.get("outages", 0) + 1
        if self.faults_on and self.rng.random() < 0.04:
            f.storm = self.rng.randint(20, 400)
            self.counts["storms"] = self.counts.get("storms", 0) + 1
        if not self.faults_on:
            f.throttle = f.lost = f.hang = f.hook_rate = 0.0
            f.down_until, f.storm = 0.0, 0

    def zombie_step(self) -> None:
        """One step of a random zombie, in the middle of another worker's flush (one at a time:
        the owner's writer threads all reach this hook, and a zombie is one process)."""
        if not self.zombie_lock.acquire(blocking=False):
            return
        try:
            self._zombie_step()
        finally:
            self.zombie_lock.release()

    def _zombie_step(self) -> None:
        live = [z for z in self.zombies if z.steps_left > 0]
        if not live:
            return
        z = self.rng.choice(live)
        z.steps_left -= 1
        self.arm(z)
        try:
            if z.interrupted:
                z.pipeline.flush()  # resume the cut flush, long after its records were redone
                z.interrupted = False
            else:
                batch = self.batch(z)
                z.pipeline.process(batch)
                z.position += len(batch)
        except Crash:
            z.steps_left = 0
        except StopProcessing as exc:
            self.stopped(exc)
            z.steps_left = 0

    def lose(self, w: Worker, *, interrupted: bool) -> None:
        """The owner is gone; sometimes it lives on as a zombie."""
        del self.owners[w.shard.id]
        if self.faults_on and self.rng.random() < 0.4:
            w.interrupted = interrupted
            w.steps_left = self.rng.randint(1, 4)
            w.client.faults.hook = None
            self.zombies.append(w)

    def step(self, shard: Shard) -> None:
        w = self.owners.get(shard.id)
        if w is None:
            w = self.owners[shard.id] = self.worker(shard, self.checkpoints[shard.id], zombie=False)
        batch = self.batch(w)
        self.arm(w)
        try:
            position = w.pipeline.process(batch)
        except Crash:
            self.lose(w, interrupted=True)
            return
        except StopProcessing as exc:
            self.stopped(exc)
            self.lose(w, interrupted=True)
            return
        w.position += len(batch)
        assert position.sequences[shard.id] == batch[-1].where.rpartition("/")[2]
        parked = w.pipeline.deadletters.parked  # type: ignore[attr-defined]
        self.parked += len(parked)
        parked.clear()
        if self.faults_on and self.rng.random() < 0.15:
            self.lose(w, interrupted=False)  # crashed between the writes and the checkpoint
            return
        self.checkpoints[shard.id] = w.position

    def run(self) -> None:
        steps = 0
        while True:
            done = {s.id for s in self.source.shards if self.checkpoints[s.id] >= len(s.records)}
            ready = [s for s in self.source.shards if s.id not in done and (s.parent is None or s.parent in done)]
            if not ready:
                break
            self.step(self.rng.choice(ready))
            steps += 1
            if steps > 300:
                self.faults_on = False  # make sure the schedule ends
        while any(z.steps_left > 0 for z in self.zombies):  # zombies may finish after the last checkpoint
            self.zombie_step()
        for w in self.workers:
            w.pipeline.close()  # the writer threads of every process, dead or alive

    def check(self) -> None:
        items = list(self.source.items.values())
        for section in self.aggregates:
            agg = compile_aggregate(section)
            rows = query_rows(self.real, agg.table, agg.name)
            expected = recompute(agg, items)
            assert report_rows(agg, rows) == expected, f"seed {self.seed}: {agg.name} differs from the recomputation"
            counts = [m.name for m in agg.metrics if m.path is None]
            for row in rows:
                for name in counts:
                    assert row.get(name) == row.get(COUNT), f"seed {self.seed}: {agg.name} {row['sk']}: {name}"


@pytest.fixture
def dynamodb(moto_url: str) -> Iterator[Any]:
    cfg = Config(aws=AwsSection(endpoint_url=moto_url))
    yield client(cfg, "dynamodb")


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_schedules_end_equal_to_the_recomputation(dynamodb: Any, chunk: int) -> None:
    schedules = range(chunk, SCHEDULES, CHUNKS)
    stats = {"records": 0, "zombies": 0, "shards": 0, "parked": 0}
    faults: dict[str, int] = {}
    for seed in schedules:
        schedule = Schedule(seed, dynamodb)
        schedule.run()
        schedule.check()
        stats["records"] += sum(len(s.records) for s in schedule.source.shards)
        stats["zombies"] += len(schedule.zombies)
        stats["shards"] += len(schedule.source.shards)
        stats["parked"] += schedule.parked
        for k, v in schedule.counts.items():
            faults[k] = faults.get(k, 0) + v
    if len(schedules) >= 100:  # they exercised what they claim to (a broken generator must not pass quietly)
        assert stats["zombies"] > 0 and stats["parked"] > 0 and stats["shards"] > len(schedules), stats
        kinds = ("outages", "budget stops", "storms", "storm calls", "hung", "throttled", "lost", "outage calls")
        kinds += ("failed parallel writes", "transactions", "cancelled transactions", "injected cancellations")
        assert all(faults.get(k, 0) > 0 for k in kinds), faults


def test_one_schedule_without_faults_is_exact(dynamodb: Any) -> None:
    schedule = Schedule(10_000, dynamodb)
    schedule.faults_on = False
    schedule.run()
    schedule.check()
    assert schedule.zombies == []
