"""Crash schedules under the commit interval: aggregates and the archive flush on their own cadence,
and a crash may land between one sink's flush and another's.

Each schedule (seeded): a model of the source table (:class:`Source` of the aggregates
fault schedules) produces stream records on shards that roll over; one worker at a time
owns the shards, through the real :class:`~worker.pipeline.Pipeline` with an
:class:`AggregatesSink` (moto DynamoDB) and an :class:`ArchiveSink` (moto S3) whose
settings vary (aggregates flushed by size or age, archive objects rotated by records),
with a fake clock and a commit interval. Both boto3 clients count their calls on one
counter and the worker crashes at a random call, before or after it reached the server:
between the aggregates' flush and the archive's, inside either, or between a flush and the
checkpoint. The next worker starts from the last checkpoint (the position the pipeline
reported by ``commit``), with an empty buffer. At each crash every checkpointed record is
in the archive; at the end every aggregate equals the recomputation from the final items
and every record is archived exactly once after duplicates are removed.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from tests.functional.archive_helpers import make_cfg, s3_client
from tests.functional.test_aggregates_faults import TEMPLATES, Source
from worker import archive
from worker.aws import client
from worker.config import AwsSection, Config
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.sinks import archive as archive_mod
from worker.sinks.aggregates.sink import AggregatesSink, report_rows
from worker.sinks.aggregates.spec import compile_aggregate, recompute
from worker.sinks.aggregates.store import ensure_table, query_rows
from worker.testing import MemoryDeadLetters

SCHEDULES = 10


class Crash(BaseException):
    """The worker process dies here."""


class Calls:
    """One call counter for every client of a worker: a crash can land in any sink's flush."""

    def __init__(self) -> None:
        self.n = 0
        self.crash_at: int | None = None
        self.after = False


class Crashing:
    def __init__(self, real: Any, calls: Calls) -> None:
        self.real, self.calls = real, calls

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)
        calls = self.calls

        def call(**kwargs: Any) -> Any:
            calls.n += 1
            crash = calls.crash_at == calls.n
            if crash and not calls.after:
                raise Crash(f"before {name}")
            resp = fn(**kwargs)
            if crash:
                raise Crash(f"after {name}")
            return resp

        return call


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Schedule:
    def __init__(self, seed: int, url: str, ddb: Any, s3: Any) -> None:
        self.seed, self.url, self.ddb, self.s3 = seed, url, ddb, s3
        self.rng = random.Random(seed)
        self.aggregates = [replace(t, name=f"c{seed}_{t.name}") for t in TEMPLATES]
        self.source = Source(self.rng, lanes=1)
        for _ in range(self.rng.randint(20, 60)):
            self.source.step()
        self.checkpoints = {s.id: 0 for s in self.source.shards}
        self.prefix = f"c{seed}/"
        self.crashes = 0
        self.between = 0  # crashes after one sink's flush and before another's

    def worker(self) -> tuple[Pipeline, Calls, Clock]:
        rng, calls, clock = self.rng, Calls(), Clock()
        if rng.random() < 0.6:
            calls.crash_at = rng.randint(1, 40)
            calls.after = rng.random() < 0.5
        aggregates = AggregatesSink(Crashing(self.ddb, calls), self.aggregates, concurrency=1)
        cfg = make_cfg(self.url, prefix=self.prefix, max_records=rng.choice([3, 7, 20, 10_000]), max_age_seconds=30)
        arch = archive_mod.build(cfg, s3=Crashing(self.s3, calls), clock=clock)  # type: ignore[arg-type]
        pipeline = Pipeline(
            [aggregates, arch],
            MemoryDeadLetters(),
            retry=RetryPolicy(attempts=3, base=0, cap=0, sleep=no_sleep),
            max_batch_records=rng.choice([2, 5, 1000]),
            flush_interval=rng.choice([0.0, 1.0, 4.0]),
            commit_interval=rng.choice([0.0, 2.0, 5.0]),
            clock=clock,
        )
        return pipeline, calls, clock

    def run(self) -> None:
        rng = self.rng
        shards = {s.id: s for s in self.source.shards}
        index = {s.id: {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(s.records)} for s in shards.values()}
        for _ in range(200):
            done = {s for s in shards if self.checkpoints[s] >= len(shards[s].records)}
            ready = [s for s in shards.values() if s.id not in done and (s.parent is None or s.parent in done)]
            if not ready:
                return
            pipeline, _, clock = self.worker()
            shard = ready[0]
            position = self.checkpoints[shard.id]
            try:
                while position < len(shard.records):
                    size = rng.randint(1, 8)
                    records = shard.records[position : position + size]
                    batch = [RawRecord(r, f"{shard.id}/{r['dynamodb']['SequenceNumber']}", shard.id) for r in records]
                    pipeline.add(batch)
                    position += len(batch)
                    clock.now += rng.choice([0.1, 0.5, 1.5])
                    reported = pipeline.commit().sequences.get(shard.id)
                    if reported is not None:
                        if rng.random() < 0.1:
                            raise Crash("after the commit, before the checkpoint")
                        self.checkpoints[shard.id] = index[shard.id][reported] + 1
                reported = pipeline.flush().sequences.get(shard.id)  # shard end: flush everything
                if reported is not None:
                    self.checkpoints[shard.id] = index[shard.id][reported] + 1
                assert self.checkpoints[shard.id] == len(shard.records)
            except Crash:
                self.crashes += 1
                flushes = pipeline.stats.sink_flushes
                if sum(flushes.values()) > 0 and flushes["aggregates"] != flushes["archive"]:
                    self.between += 1
                self.check_archived_up_to_checkpoints(shards)
        raise AssertionError(f"seed {self.seed}: the schedule did not end")

    def check_archived_up_to_checkpoints(self, shards: dict[str, Any]) -> None:
        _, got, errors = archive.read_all(self.s3, "archive", self.prefix)
        assert not errors
        have = {(r.shard_id, r.sequence) for r in got}
        for sid, upto in self.checkpoints.items():
            for r in shards[sid].records[:upto]:
                seq = int(r["dynamodb"]["SequenceNumber"])
                assert (sid, seq) in have, f"seed {self.seed}: checkpointed {sid}/{seq} is not archived"

    def check(self) -> None:
        items = list(self.source.items.values())
        for section in self.aggregates:
            agg = compile_aggregate(section)
            rows = query_rows(self.ddb, agg.table, agg.name)
            assert report_rows(agg, rows) == recompute(agg, items), f"seed {self.seed}: {agg.name} differs"
        _, got, errors = archive.read_all(self.s3, "archive", self.prefix)
        assert not errors
        for shard in self.source.shards:
            mine = [r.sequence for r in got if r.shard_id == shard.id]
            assert mine == [int(r["dynamodb"]["SequenceNumber"]) for r in shard.records], f"seed {self.seed}"


@pytest.fixture
def clients(moto_url: str) -> tuple[Any, Any]:
    ddb = client(Config(aws=AwsSection(endpoint_url=moto_url)), "dynamodb")
    for table in sorted({t.table for t in TEMPLATES}):
        ensure_table(ddb, table, create=True)
    s3 = s3_client(moto_url)
    s3.create_bucket(Bucket="archive")
    return ddb, s3


def test_crashes_between_sink_flushes_lose_nothing_and_count_nothing_twice(moto_url: str, clients: Any) -> None:
    ddb, s3 = clients
    totals = {"crashes": 0, "between": 0}
    for seed in range(SCHEDULES):
        schedule = Schedule(seed, moto_url, ddb, s3)
        schedule.run()
        schedule.check()
        totals["crashes"] += schedule.crashes
        totals["between"] += schedule.between
    # The generator exercised what it claims to: crashes, some between one sink's flush and another's.
    assert totals["crashes"] >= SCHEDULES and totals["between"] >= 3, totals
