"""The commit interval and per-sink durability: the checkpoint is the minimum of what every sink made durable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from worker import shapes
from worker.diff import Change
from worker.errors import RecordError
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.testing import MemoryDeadLetters, MemorySink

SHARD = "shardId-1"


def batch(n: int, start: int = 1) -> list[RawRecord]:
    out = []
    for i in range(start, start + n):
        canon = shapes.build("INSERT", {"id": f"k{i}"}, new={"id": f"k{i}", "n": i}, sequence=10**20 + i)
        out.append(RawRecord(shapes.render(canon, "wire"), f"{SHARD}/{10**20 + i}", SHARD))
    return out


def seq(i: int) -> str:
    return str(10**20 + i)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ChunkSink:
    """A fake cadenced sink (like the archive): writes only whole chunks of ``size`` records, in order."""

    size: int
    name: str = "chunks"
    pending: list[Change] = field(default_factory=list)
    flushed: list[Change] = field(default_factory=list)

    def add(self, change: Change) -> None:
        self.pending.append(change)

    def due(self, now: float) -> bool:
        return len(self.pending) >= self.size

    def flush_ready(self) -> Sequence[RecordError]:
        whole = len(self.pending) // self.size * self.size
        self.flushed.extend(self.pending[:whole])
        del self.pending[:whole]
        return ()

    def flush(self) -> Sequence[RecordError]:
        self.flushed.extend(self.pending)
        self.pending.clear()
        return ()

    def unflushed(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        self.pending.clear()


def make(*sinks: object, clock: Clock, commit: float = 5.0, flush: float = 1.0, dl: object = None) -> Pipeline:
    return Pipeline(
        list(sinks),  # type: ignore[arg-type]
        dl or MemoryDeadLetters(),  # type: ignore[arg-type]
        retry=RetryPolicy(attempts=2, sleep=no_sleep),
        flush_interval=flush,
        commit_interval=commit,
        max_batch_records=1000,
        clock=clock,
    )


def test_nothing_is_reported_before_the_commit_interval() -> None:
    clock, sink = Clock(), MemorySink()
    p = make(sink, clock=clock)
    p.add(batch(3))
    assert not p.commit()  # the first commit: nothing durable yet (not due: 0 s old)
    clock.now = 2.0
    p.add(batch(2, start=4))  # the sink is due (oldest record 2 s old): flushed, but not yet reported
    assert len(sink.flushed) == 5
    assert not p.commit()
    clock.now = 5.0
    assert p.commit().sequences == {SHARD: seq(5)}
    assert not p.commit(force=True)  # reported once


def test_a_sink_flushed_by_age_keeps_its_records_until_due() -> None:
    clock, sink = Clock(), MemorySink()
    p = make(sink, clock=clock, commit=0.0)
    p.add(batch(3))
    assert sink.flushed == [] and not p.commit()  # 0 s old, 3 of 1000 records: not due
    clock.now = 1.0
    p.flush_due()
    assert len(sink.flushed) == 3 and p.commit().sequences == {SHARD: seq(3)}


def test_the_checkpoint_is_the_minimum_over_sinks() -> None:
    clock, fast, chunks = Clock(), MemorySink(), ChunkSink(size=4)
    p = make(fast, chunks, clock=clock, commit=0.0, flush=0.0)
    p.add(batch(6))
    assert len(fast.flushed) == 6 and len(chunks.flushed) == 4
    assert p.commit().sequences == {SHARD: seq(4)}  # the chunk sink holds 5 and 6
    p.add(batch(1, start=7))
    assert not p.commit()
    p.add(batch(1, start=8))
    assert p.commit().sequences == {SHARD: seq(8)}
    assert p.freshness() == {"memory": 0.0, "chunks": 0.0}


def test_freshness_is_the_age_of_the_oldest_unflushed_record_per_sink() -> None:
    clock, fast, chunks = Clock(), MemorySink(), ChunkSink(size=100)
    p = make(fast, chunks, clock=clock, commit=0.0, flush=10.0)
    p.add(batch(2))
    clock.now = 3.0
    p.add(batch(1, start=3))
    assert p.freshness() == {"memory": 3.0, "chunks": 3.0}
    clock.now = 10.0
    p.flush_due()
    assert p.freshness() == {"memory": 0.0, "chunks": 10.0}
    p.commit()
    assert p.stats.unflushed_age == {"memory": 0.0, "chunks": 10.0}


def test_a_full_flush_reports_everything() -> None:
    clock, chunks = Clock(), ChunkSink(size=100)
    p = make(chunks, clock=clock)
    p.add(batch(5))
    assert not p.commit(force=True)
    assert p.flush().sequences == {SHARD: seq(5)} and len(chunks.flushed) == 5


def test_a_parked_record_is_reported_only_once_the_dead_letters_are_durable() -> None:
    class FlakyDeadLetters(MemoryDeadLetters):
        broken = True

        def flush(self) -> None:
            if self.broken:
                raise OSError("disk full")
            super().flush()

    clock, sink, dl = Clock(), MemorySink(reject=lambda c: "bad" if c.record.sequence == 10**20 + 2 else None), None
    dl = FlakyDeadLetters()
    p = make(sink, clock=clock, commit=0.0, flush=0.0, dl=dl)
    p.add(batch(3))
    try:
        p.commit()
    except Exception as exc:
        assert "dead letters" in str(exc)
    else:
        raise AssertionError("commit must fail while the dead letters cannot be written")
    dl.broken = False
    assert p.commit().sequences == {SHARD: seq(3)} and [e.where for e in dl.parked] == [f"{SHARD}/{seq(2)}"]


def test_records_only_parked_do_not_hold_back_a_sink() -> None:
    clock, chunks = Clock(), ChunkSink(size=2)
    p = make(chunks, clock=clock, commit=0.0, flush=0.0)
    p.add(batch(2))
    bad = RawRecord(b"not json", f"{SHARD}/{seq(3)}", SHARD, seq(3))
    p.add([bad])
    assert p.commit().sequences == {SHARD: seq(3)}


def test_discard_drops_what_was_not_reported() -> None:
    clock, chunks = Clock(), ChunkSink(size=100)
    p = make(chunks, clock=clock, commit=0.0)
    p.add(batch(3))
    p.discard()
    p.add(batch(2, start=4))
    assert p.flush().sequences == {SHARD: seq(5)}
