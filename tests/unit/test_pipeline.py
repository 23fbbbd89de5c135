"""The pipeline's error actions (retry, park, stop) and its checkpoint rule."""

import pytest

from worker import shapes
from worker.errors import FatalError, RetryableError
from worker.pipeline import Pipeline, StopProcessing
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.testing import MemoryDeadLetters, MemorySink


def batch(n, start=1, shard="shardId-1"):
    out = []
    for i in range(start, start + n):
        canon = shapes.build("INSERT", {"id": f"k{i}"}, new={"id": f"k{i}", "n": i}, sequence=10**20 + i)
        out.append(RawRecord(shapes.render(canon, "wire"), f"{shard}/{10**20 + i}", shard))
    return out


def pipeline(*sinks, attempts=3, **intervals):
    dl = MemoryDeadLetters()
    return Pipeline(list(sinks), dl, retry=RetryPolicy(attempts=attempts, sleep=no_sleep), **intervals), dl


def test_position_is_reported_only_after_every_sink_flushed():
    a, b = MemorySink("a"), MemorySink("b")
    p, _ = pipeline(a, b)
    pos = p.process(batch(3))
    assert pos.sequences == {"shardId-1": str(10**20 + 3)}
    assert len(a.flushed) == len(b.flushed) == 3 and not a.pending


def test_transient_flush_failures_are_retried_and_nothing_is_lost():
    def flaky(n):
        if n < 3:
            raise RetryableError("throttled", retry_after=0.5)

    sink = MemorySink(fail=flaky)
    slept = []
    dl = MemoryDeadLetters()
    p = Pipeline([sink], dl, retry=RetryPolicy(attempts=5, sleep=slept.append))
    pos = p.process(batch(4))
    assert len(sink.flushed) == 4 and pos
    assert p.stats.retries == 2 and len(slept) == 2
    assert all(s >= 0.5 for s in slept)  # the server's retry_after hint is a floor


def test_retries_exhausted_stop_without_a_position():
    def always(_):
        raise RetryableError("down")

    sink = MemorySink(fail=always)
    p, _ = pipeline(sink, attempts=3)
    with pytest.raises(StopProcessing, match="gave up after 3 attempts"):
        p.process(batch(2))
    assert sink.flushed == [] and sink.flushes == 3


def test_unexpected_errors_stop_at_once():
    def broken(_):
        raise KeyError("bug")

    sink = MemorySink(fail=broken)
    p, _ = pipeline(sink)
    with pytest.raises(StopProcessing):
        p.process(batch(1))
    assert sink.flushes == 1


def test_fatal_error_is_not_retried():
    def fatal(_):
        raise FatalError("table deleted")

    sink = MemorySink(fail=fatal)
    p, _ = pipeline(sink)
    with pytest.raises(StopProcessing, match="table deleted"):
        p.process(batch(1))
    assert sink.flushes == 1


def test_a_record_a_sink_refuses_is_parked_and_the_batch_goes_on():
    sink = MemorySink(reject=lambda c: "no odd ids" if c.key["id"] in ("k1", "k3") else None)
    other = MemorySink("other")
    p, dl = pipeline(sink, other)
    pos = p.process(batch(4))
    assert [c.key["id"] for c in sink.flushed] == ["k2", "k4"]
    assert len(other.flushed) == 4
    assert [(e.where, e.sink, e.reason) for e in dl.parked] == [
        (f"shardId-1/{10**20 + 1}", "memory", "no odd ids"),
        (f"shardId-1/{10**20 + 3}", "memory", "no odd ids"),
    ]
    assert dl.parked[0].payload["dynamodb"]["Keys"] == {"id": {"S": "k1"}}
    assert pos.sequences["shardId-1"] == str(10**20 + 4)


def test_undecodable_records_are_parked_with_the_raw_payload():
    sink = MemorySink()
    p, dl = pipeline(sink)
    good = batch(1)
    p.process([RawRecord(b'{"eventName": "INSERT"', "f.jsonl:2"), *good])
    assert len(sink.flushed) == 1
    (err,) = dl.parked
    assert err.where == "f.jsonl:2" and "invalid JSON" in err.reason and err.payload == '{"eventName": "INSERT"'


def test_dead_letters_are_durable_before_the_position_is_returned():
    class FailingDeadLetters(MemoryDeadLetters):
        def flush(self):
            raise RetryableError("s3 down")

    sink = MemorySink(reject=lambda c: "bad")
    p = Pipeline([sink], FailingDeadLetters(), retry=RetryPolicy(attempts=2, sleep=no_sleep))
    with pytest.raises(StopProcessing, match="dead letters"):
        p.process(batch(1))


def test_discard_forgets_unflushed_work():
    sink = MemorySink()
    p, _ = pipeline(sink, flush_interval=60)
    p.add(batch(2))
    p.discard()
    p.close()
    assert sink.closed and sink.flushed == []
    assert not p.flush()


def test_large_batches_flush_every_max_batch_records():
    sink = MemorySink()
    p = Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(sleep=no_sleep), max_batch_records=2, flush_interval=60)
    p.add(batch(5))
    assert sink.flushes == 2 and len(sink.flushed) == 4
    assert p.flush().sequences == {"shardId-1": str(10**20 + 5)}


def test_sinks_due_together_flush_side_by_side():
    import threading

    both = threading.Barrier(2, timeout=10)  # passed only if the two flushes run at the same time

    def meet(_):
        both.wait()

    a, b = MemorySink("a", fail=meet), MemorySink("b", fail=meet)
    p, _ = pipeline(a, b, attempts=1)
    pos = p.process(batch(3))
    assert len(a.flushed) == len(b.flushed) == 3 and pos.sequences == {"shardId-1": str(10**20 + 3)}
    p.close()


def test_one_flush_sequentially_when_parallel_flush_is_off():
    import threading

    both = threading.Barrier(2, timeout=0.5)

    def meet(_):
        both.wait()

    a, b = MemorySink("a", fail=meet), MemorySink("b", fail=meet)
    p = Pipeline([a, b], MemoryDeadLetters(), retry=RetryPolicy(attempts=1, sleep=no_sleep), parallel_flush=False)
    with pytest.raises(StopProcessing, match="a: flush failed"):  # alone at the barrier: it breaks
        p.process(batch(1))


def test_a_failing_flush_lets_the_others_finish_and_reports_no_position():
    def down(_):
        raise FatalError("table gone")

    a, b = MemorySink("a", fail=down), MemorySink("b")
    p, _ = pipeline(a, b)
    with pytest.raises(StopProcessing, match="a: flush failed: table gone"):
        p.process(batch(2))
    assert len(b.flushed) == 2  # b's flush ran to its end beside a's failure
    assert p.commit(force=True).sequences == {}  # a holds nothing durable: nothing may be checkpointed
    p.close()
