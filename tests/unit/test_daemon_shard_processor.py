"""The shard processor's decisions, in process: fakes for the sinks and for kclpy's checkpointer."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from amazon_kclpy import messages
from amazon_kclpy.checkpoint_error import CheckpointError

from worker import shapes
from worker.errors import RetryableError
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.sources.kcl import ShardProcessor
from worker.testing import MemoryDeadLetters, MemorySink

SHARD = "shardId-00000001763791200000-4f1c2a9b"


class Died(Exception):
    pass


def die(code: int) -> NoReturn:
    raise Died(code)


class FakeCheckpointer:
    """kclpy's Checkpointer as the processor sees it; ``errors`` are answered in order, then success."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[str | None, int | None]] = []

    def checkpoint(self, sequence: str | None = None, sub: int | None = None) -> None:
        self.calls.append((sequence, sub))
        if self.errors:
            raise CheckpointError(self.errors.pop(0))


def records(n: int, start: int = 4200000000012345678000) -> list[messages.Record]:
    out = []
    for i in range(1, n + 1):
        ml = shapes.render(
            shapes.build("INSERT", {"id": f"k{i}"}, new={"id": f"k{i}"}, sequence=start + i), "multilang"
        )
        out.append(messages.Record({**ml, "action": "record"}))
    return out


def process_input(recs: list[messages.Record], checkpointer: FakeCheckpointer) -> Any:
    inp = messages.ProcessRecordsInput({"action": "processRecords", "records": recs, "millisBehindLatest": 0})
    inp.dispatch(checkpointer, _Capture())
    return inp


class _Capture:
    def process_records(self, inp: Any) -> None:
        pass


def processor(sink: MemorySink, retries: int = 3, **intervals: float) -> ShardProcessor:
    pipeline = Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(attempts=2, sleep=no_sleep), **intervals)
    p = ShardProcessor(pipeline, checkpoint_retry=RetryPolicy(attempts=retries, sleep=no_sleep), die=die)
    p.initialize(
        messages.InitializeInput(
            {"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        )
    )
    return p


def test_checkpoint_follows_the_flush_of_the_whole_batch() -> None:
    sink = MemorySink()
    cp = FakeCheckpointer()
    recs = records(3)
    processor(sink).process_records(process_input(recs, cp))
    assert len(sink.flushed) == 3 and sink.pending == []
    assert cp.calls == [(recs[-1].sequence_number, 0)]


def test_sink_failure_dies_before_any_checkpoint() -> None:
    def fail(_: int) -> None:
        raise RetryableError("503 from the target")

    sink = MemorySink(fail=fail)
    cp = FakeCheckpointer()
    with pytest.raises(Died):
        processor(sink).process_records(process_input(records(2), cp))
    assert cp.calls == [] and sink.flushed == []


def test_unexpected_error_in_a_sink_dies_too() -> None:
    class Broken(MemorySink):
        def add(self, change: Any) -> None:
            raise KeyError("bug")

    cp = FakeCheckpointer()
    with pytest.raises(Died):
        processor(Broken()).process_records(process_input(records(1), cp))
    assert cp.calls == []


def test_checkpoint_retries_then_dies_on_an_unknown_error() -> None:
    cp = FakeCheckpointer("ThrottlingException", "IllegalArgumentException")
    p = processor(MemorySink())
    with pytest.raises(Died):
        p.process_records(process_input(records(1), cp))
    assert len(cp.calls) == 2
    assert p.metrics.data["checkpoint_retries"] == 1


def test_lease_lost_drops_pending_work_and_closes() -> None:
    sink = MemorySink()
    p = processor(sink, flush_interval=60)
    p.pipeline.add(
        [RawRecord(payload=shapes.build("INSERT", {"id": "x"}, new={"id": "x"}), where="f:1", shard_id=SHARD)]
    )
    assert len(sink.pending) == 1
    p.lease_lost(messages.LeaseLostInput({"action": "leaseLost"}))
    assert sink.pending == [] and sink.flushed == [] and sink.closed
    assert p.metrics.data["state"] == "closed"


def test_the_checkpoint_is_the_position_the_pipeline_reports_durable() -> None:
    class Reporting(Pipeline):
        """A real pipeline whose commit reports an older position than the batch's last record."""

        reported: str = ""

        def commit(self, *, force: bool = False) -> Any:
            position = super().commit(force=force)
            return type(position)({SHARD: self.reported})

    recs = records(3)
    pipeline = Reporting([MemorySink()], MemoryDeadLetters(), retry=RetryPolicy(attempts=2, sleep=no_sleep))
    pipeline.reported = recs[1].sequence_number
    p = ShardProcessor(pipeline, checkpoint_retry=RetryPolicy(attempts=3, sleep=no_sleep), die=die)
    p.initialize(
        messages.InitializeInput(
            {"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        )
    )
    cp = FakeCheckpointer()
    p.process_records(process_input(recs, cp))
    assert cp.calls == [(recs[1].sequence_number, 0)]  # not records[-1]


def test_a_last_record_that_does_not_decode_is_parked_and_checkpointed() -> None:
    recs = records(2)
    ml = shapes.render(
        shapes.build("INSERT", {"id": "b"}, new={"id": "b"}, sequence=4200000000012345679000), "multilang"
    )
    bad = messages.Record({**ml, "action": "record", "data": "not base64!"})  # parked, durable in the dead letters
    sink, cp = MemorySink(), FakeCheckpointer()
    p = processor(sink)
    p.process_records(process_input([recs[0], bad], cp))
    assert len(sink.flushed) == 1
    assert cp.calls == [(bad.sequence_number, 0)]


def test_batches_are_acknowledged_without_a_checkpoint_until_the_commit_interval() -> None:
    now = [0.0]
    sink = MemorySink()
    pipeline = Pipeline(
        [sink],
        MemoryDeadLetters(),
        retry=RetryPolicy(attempts=2, sleep=no_sleep),
        flush_interval=1.0,
        commit_interval=5.0,
        clock=lambda: now[0],
    )
    p = ShardProcessor(pipeline, checkpoint_retry=RetryPolicy(attempts=3, sleep=no_sleep), die=die)
    p.initialize(
        messages.InitializeInput(
            {"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        )
    )
    recs = records(6)
    cp = FakeCheckpointer()
    p.process_records(process_input(recs[:2], cp))
    now[0] = 2.0
    p.process_records(process_input(recs[2:4], cp))  # the sink is due (2 s old): flushed, not checkpointed
    assert len(sink.flushed) == 4 and cp.calls == []
    now[0] = 5.5
    p.process_records(process_input(recs[4:5], cp))  # interval elapsed: the durable position, not the newest
    assert cp.calls == [(recs[3].sequence_number, 0)] and len(sink.pending) == 1
    now[0] = 6.0
    p.process_records(process_input([], cp))  # an empty batch runs the cadence; no commit before 10.5
    assert cp.calls == [(recs[3].sequence_number, 0)]
    p.process_records(process_input(recs[5:], cp))
    p.shutdown_requested(_Shutdown(cp))  # graceful hand-off: flush everything, checkpoint the newest
    assert sink.pending == [] and cp.calls[-1] == (recs[5].sequence_number, 0)


class _Shutdown:
    def __init__(self, checkpointer: FakeCheckpointer) -> None:
        self.checkpointer = checkpointer


def test_the_heap_is_released_after_each_batch_not_before_its_checkpoint() -> None:
    sink = MemorySink()
    pipeline = Pipeline([sink], MemoryDeadLetters())
    cp = FakeCheckpointer()
    seen: list[int] = []  # checkpoints made when each release came
    p = ShardProcessor(
        pipeline,
        checkpoint_retry=RetryPolicy(attempts=3, sleep=no_sleep),
        die=die,
        release_heap=lambda: seen.append(len(cp.calls)),
    )
    p.initialize(
        messages.InitializeInput(
            {"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        )
    )
    p.process_records(process_input(records(2), cp))
    p.process_records(process_input(records(2, start=4200000000012345679000), cp))
    assert seen == [1, 2]  # once per batch, after the batch's checkpoint


def test_releasing_the_heap_is_harmless_here() -> None:
    from worker.sources.kcl import release_free_heap

    release_free_heap()  # glibc's malloc_trim on Linux; must not raise anywhere
