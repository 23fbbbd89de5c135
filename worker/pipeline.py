"""One pipeline for every source: decode -> diff -> sinks -> dead letters -> checkpoint.

Sources hand over :class:`~worker.records.RawRecord` batches; the pipeline
decodes, diffs and routes each change to every sink. A position it returns is
safe to checkpoint: **every sink and the dead-letter location have made every
record up to it durable** (quix-streams' rule: flush, then commit; a failed
flush aborts the commit).

Durability per sink (the model of Kafka Connect, Flink and quix-streams):

* Every record added gets an *ordinal*. Each sink flushes on its own cadence
  and the pipeline keeps, per sink, the last ordinal that sink made durable:
  after ``flush()`` every record added so far; a sink with a cadence of its
  own (:class:`~worker.sinks.Cadenced`, the archive) reports how many of its
  most recent adds are still unflushed. Sinks without a cadence are flushed
  by the pipeline when ``flush_records`` records or ``flush_interval`` seconds
  have accumulated for them.
* :meth:`Pipeline.commit` (at most once per ``commit_interval``) flushes the
  dead letters, then returns, per shard, the newest position whose ordinal is
  at most the minimum over sinks: a log of (ordinal, shard, sequence) is
  popped as that minimum advances. A parked record is in the dead letters'
  buffer before its ordinal is passed, and the dead letters are flushed
  before any position is reported, so a parked record is durable before it is
  checkpointed.
* :meth:`Pipeline.flush` flushes everything (shutdown, shard end, the end of a
  replay or a local run) and reports every position added so far.
* :meth:`Pipeline.discard` (lease lost) forgets everything not yet reported.
* Sinks due at the same moment flush side by side (one thread each): their
  writes go to different services and never depend on each other, so their
  waits overlap instead of adding up. Each flush is settled (its rejected
  records parked, its durable point moved) in the calling thread, in sink
  order, after all have ended; the first failure is raised then.

Error actions (see :mod:`worker.errors`):

* a decode error or a sink's ``RecordError`` parks that record (with the sink's
  name) and the batch goes on;
* a ``RetryableError`` from a flush is retried with backoff and jitter; the
  sink keeps its buffer, so the retry rewrites the same data (idempotent);
* anything else, or retries exhausted, raises :class:`StopProcessing`: the
  caller must not checkpoint and should exit non-zero.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from worker.decode import decode
from worker.diff import Change, diff
from worker.errors import Action, FatalError, RecordError, action_of
from worker.log import get_logger
from worker.positions import AddLog, PositionLog
from worker.records import RawRecord, StreamRecord
from worker.retry import RetryPolicy
from worker.sinks import Cadenced, DeadLetters, Sink

__all__ = ["Pipeline", "Position", "Stats", "StopProcessing"]


class StopProcessing(FatalError):
    """The pipeline cannot go on; nothing since the last checkpoint may be acknowledged."""


# Upper bounds (seconds) of the flush-latency histogram's buckets; the last bucket is +Inf.
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Stats:
    """Counters since start (exported as metrics by the daemon)."""

    records: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # INSERT / MODIFY / REMOVE
    changes: Counter[str] = field(default_factory=Counter)  # ChangeKind values + "noop"
    deadletters: int = 0
    retries: int = 0
    flushes: int = 0
    sink_seconds: dict[str, float] = field(default_factory=dict)
    # per sink: flushes per FLUSH_BUCKETS bucket (not cumulative; one more for +Inf)
    sink_buckets: dict[str, list[int]] = field(default_factory=dict)
    sink_flushes: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    unflushed_age: dict[str, float] = field(default_factory=dict)  # per sink, at the last commit tick
    last_created_at: float | None = None  # ApproximateCreationDateTime of the newest record


@dataclass(frozen=True)
class Position:
    """The last durable sequence number per shard (``where`` for records without one)."""

    sequences: dict[str, str]

    def __bool__(self) -> bool:
        return bool(self.sequences)


class Pipeline:
    """Routes changes to sinks; flushes and reports checkpoint-safe positions.

    The intervals default to 0 (flush the size-flushed sinks after every
    ``add`` and report at every ``commit``); ``[pipeline]`` configures them
    for a service.

    Not thread-safe; one pipeline per shard process (the KCL model).
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        deadletters: DeadLetters,
        *,
        retry: RetryPolicy | None = None,
        max_batch_records: int = 1000,
        flush_interval: float = 0.0,
        commit_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
        parallel_flush: bool = True,
    ) -> None:
        self.sinks = list(sinks)
        self.parallel_flush = parallel_flush
        self._pool: ThreadPoolExecutor | None = None
        self.deadletters = deadletters
        self.retry = retry or RetryPolicy()
        self.max_batch_records = max_batch_records  # a sink without a cadence is flushed every N records...
        self.flush_interval = flush_interval  # ... or when its oldest unflushed record is this old
        self.commit_interval = commit_interval
        self.clock = clock
        self.log = log or get_logger("worker.pipeline")
        self.stats = Stats()
        self._ordinal = 0  # records added so far
        self._positions = PositionLog()  # (ordinal, shard, sequence) of records not yet reported
        self._sinks = [_SinkState(sink) for sink in self.sinks]
        self._last_commit = float("-inf")  # the first commit is not held back
        if self.retry.on_retry is None:
            self.retry.on_retry = self._on_retry

    # -- feeding -------------------------------------------------------------------

    def process(self, batch: Iterable[RawRecord]) -> Position:
        """Add a batch and flush everything; returns the position now safe to checkpoint."""
        self.add(batch)
        return self.flush()

    def add(self, batch: Iterable[RawRecord]) -> None:
        """Decode, diff and add records to every sink; flushes the sinks that are due.

        A flush triggered here is durable, but the caller only learns the
        position from :meth:`commit` or :meth:`flush`; it is never acknowledged early.
        """
        limit = self.max_batch_records
        for raw in batch:
            self.add_one(raw)
            if self._ordinal % limit == 0:
                self.flush_due()
        self.flush_due()

    def add_one(self, raw: RawRecord) -> Change | None:
        stats = self.stats
        stats.records += 1
        try:
            record = decode(raw)
        except RecordError as exc:
            err = exc.located(raw.where, _payload(raw))
            err.shard_id = err.shard_id or raw.shard_id
            if isinstance(raw.payload, bytes | str):
                err.raw = raw.payload
            # A replayed dead letter that still fails is parked again for the same sinks.
            for name in raw.replay_sinks or (None,):
                err.sink = name
                self.park(err.located(err.where))
            self._advance(raw.shard_id or raw.where, raw.sequence)
            return None
        return self.add_record(record, position=raw.sequence, replay_sinks=raw.replay_sinks)

    def add_record(
        self, record: StreamRecord, *, position: str | None = None, replay_sinks: tuple[str, ...] | None = None
    ) -> Change | None:
        """Add an already decoded record (sources that decode themselves, e.g. replays).

        ``position`` is the source's position of the record (default: its
        sequence number); :meth:`flush` reports it once the record is durable.
        ``replay_sinks`` (a replayed dead letter) routes the record to those sinks only
        (empty: every sink), marked :attr:`~worker.diff.Change.replayed`: the sinks that
        applied it the first time never see it again.
        """
        seq = position or record.sequence_number
        stats = self.stats
        # _value_ is the plain attribute behind Enum.value (a Python-level property): per record
        stats.kinds[record.event_name._value_] += 1
        try:
            change = diff(record)
        except RecordError as exc:
            for name in replay_sinks or (None,):
                err = self._of(exc, record)
                err.sink = name
                self.park(err)
            self._advance(record.shard_id or record.where, seq)
            return None
        sinks = self.sinks
        if replay_sinks is not None:
            change = Change(change.kind, record, change.changed, replayed=True)
            if replay_sinks:
                sinks = [s for s in sinks if s.name in replay_sinks]
        stats.changes["noop" if change.noop else change.kind._value_] += 1
        ordinal = self._ordinal + 1
        for state in self._sinks:
            sink = state.sink
            if sinks is not self.sinks and not any(sink is s for s in sinks):  # a replayed dead letter: its sinks
                continue
            state.added(ordinal, self.clock)
            try:
                sink.add(change)
            except RecordError as exc:
                err = self._of(exc, record)
                err.sink = err.sink or sink.name
                self.park(err)
            except Exception as exc:
                if action_of(exc) is Action.PARK:  # a WorkerError subclass with PARK
                    self.park(self._of(RecordError(str(exc), sink=sink.name), record))
                    continue
                raise StopProcessing(f"{sink.name}: add failed at {record.location}: {exc}") from exc
        self._advance(record.shard_id or record.where, seq)
        return change

    @staticmethod
    def _of(exc: RecordError, record: StreamRecord) -> RecordError:
        """``exc`` located at ``record``, carrying what a replay of its dead letter needs."""
        err = exc.located(record.location, record.original())
        err.shard_id = err.shard_id or record.shard_id
        err.sequence_number = err.sequence_number or record.sequence_number
        err.raw = err.raw or record.original_text()
        return err

    # -- flushing ------------------------------------------------------------------

    def flush_due(self) -> None:
        """Flush the sinks whose cadence says so (size, age, or the sink's own rule)."""
        now = self.clock()
        due = [state for state in self._sinks if state.due(now, self.max_batch_records, self.flush_interval)]
        if due:
            self._flush_sinks(due, everything=False)

    def commit(self, *, force: bool = False) -> Position:
        """The positions every sink has made durable since the last report.

        At most once per ``commit_interval`` (an empty position otherwise; the
        first call is never held back) unless ``force``. Flushes the dead letters first, so a parked record is durable
        before its position is reported.
        """
        now = self.clock()
        if not force and now - self._last_commit < self.commit_interval:
            return Position({})
        self._last_commit = now
        self.stats.unflushed_age = self.freshness()
        self._flush_deadletters()
        everything = self._ordinal
        upto = min((s.durable if s.count else everything for s in self._sinks), default=everything)
        done = self._positions.pop_upto(upto)
        if done:
            self.stats.commits += 1
        return Position(done)

    def flush(self) -> Position:
        """Flush every sink, then the dead letters; return what is now safe to checkpoint."""
        self._flush_sinks(self._sinks, everything=True)
        self.stats.flushes += 1
        return self.commit(force=True)

    def freshness(self) -> dict[str, float]:
        """Per sink, the age in seconds of its oldest record not yet durable (0 when none)."""
        now = self.clock()
        return {s.sink.name: s.oldest_age(now) for s in self._sinks}

    def _flush_sinks(self, states: Sequence[_SinkState], *, everything: bool) -> None:
        """Flush ``states``' sinks (side by side when several), then settle each in order."""
        if len(states) <= 1 or not self.parallel_flush:  # none (no sinks configured) or one: no pool
            for state in states:
                self._settle(state, self._run_flush(state, everything=everything))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self._sinks), thread_name_prefix="flush")
        futures = [self._pool.submit(self._run_flush, state, everything=everything) for state in states]
        failure: BaseException | None = None
        for state, fut in zip(states, futures, strict=True):
            try:
                outcome = fut.result()
            except BaseException as exc:  # every flush ends before the first failure surfaces
                failure = failure or exc
                continue
            if failure is None:
                self._settle(state, outcome)
        if failure is not None:
            raise failure

    def _run_flush(self, state: _SinkState, *, everything: bool) -> tuple[Sequence[RecordError], bool]:
        """One sink's flush with retries: what it rejected, and whether it was partial."""
        sink = state.sink
        started = self.clock()
        partial = not everything and isinstance(sink, Cadenced)
        try:
            if partial:
                rejected = self.retry.call(sink.flush_ready, f"flush {sink.name}")  # type: ignore[attr-defined]
            else:
                rejected = self.retry.call(sink.flush, f"flush {sink.name}")
        except Exception as exc:
            raise StopProcessing(f"{sink.name}: flush failed: {exc}") from exc
        finally:
            self._time(sink.name, self.clock() - started)
        return rejected, partial

    def _time(self, name: str, took: float) -> None:
        secs = self.stats.sink_seconds
        secs[name] = secs.get(name, 0.0) + took
        buckets = self.stats.sink_buckets.setdefault(name, [0] * (len(FLUSH_BUCKETS) + 1))
        buckets[bisect.bisect_left(FLUSH_BUCKETS, took)] += 1

    def _settle(self, state: _SinkState, outcome: tuple[Sequence[RecordError], bool]) -> None:
        """After a sink's flush: park what it rejected (durably), then move its durable point."""
        sink = state.sink
        rejected, partial = outcome
        self.stats.sink_flushes[sink.name] += 1
        for err in rejected:
            err.sink = err.sink or sink.name
            self.park(err)
        if rejected:  # durable in the dead letters before the sink's position moves past them
            self._flush_deadletters()
        state.flushed(sink.unflushed() if partial else 0)  # type: ignore[attr-defined]

    def _flush_deadletters(self) -> None:
        try:
            self.retry.call(self.deadletters.flush, "flush dead letters")
        except Exception as exc:
            raise StopProcessing(f"dead letters: flush failed: {exc}") from exc

    def close(self) -> None:
        """Close sinks without flushing (unflushed work is dropped, never acknowledged)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing must not mask the reason we are closing
                self.log.warning("sink close failed", sink=sink.name, error=str(exc))
        self.deadletters.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.discard()

    def discard(self) -> None:
        """Forget everything not yet reported (lease lost): nothing of it is acknowledged."""
        self._positions.clear()
        for state in self._sinks:
            state.durable = self._ordinal
            state.reset()

    # -- internals -----------------------------------------------------------------

    def _advance(self, shard: str, sequence: str | None) -> None:
        self._ordinal += 1
        if sequence is not None:
            self._positions.append(self._ordinal, shard, sequence)

    def park(self, error: RecordError) -> None:
        """Park one record found bad outside the pipeline's own path (e.g. a damaged archive line):
        logged, counted, and durable with the next flush, before any checkpoint."""
        self.stats.deadletters += 1
        shard, _, seq = error.where.rpartition("/")
        if not seq.isdigit():  # a file:line place, not shard/sequence
            shard = seq = ""
        self.log.error(
            "record parked",
            where=error.where,
            shard=shard or None,
            sequence=seq or None,
            sink=error.sink,
            field=error.field,
            error=error.reason,
        )
        self.deadletters.park(error)

    def _on_retry(self, what: str, attempt: int, exc: BaseException, wait: float) -> None:
        self.stats.retries += 1
        self.log.warning("retrying", what=what, attempt=attempt, wait=round(wait, 3), error=str(exc))


class _SinkState:
    """One sink's durability: the last durable ordinal and its unflushed adds.

    ``adds`` holds (ordinal, added at) of the adds since the last durable
    point, for sinks that may leave some of them unflushed (a
    :class:`~worker.sinks.Cadenced` sink); for the others only the count and
    the time of the first one are kept.
    """

    __slots__ = ("adds", "cadenced", "count", "durable", "first_at", "last", "sink")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.cadenced = isinstance(sink, Cadenced)
        self.durable = 0
        self.last = 0  # ordinal of the newest add
        self.count = 0
        self.first_at: float | None = None
        self.adds = AddLog()

    def added(self, ordinal: int, clock: Callable[[], float]) -> None:
        self.last = ordinal
        self.count += 1
        if self.cadenced:
            self.adds.append(ordinal, clock())
        elif self.first_at is None:
            self.first_at = clock()

    def due(self, now: float, records: int, interval: float) -> bool:
        if self.cadenced:
            return bool(self.adds) and self.sink.due(now)  # type: ignore[attr-defined]
        if self.count == 0:
            return False
        first = self.first_at if self.first_at is not None else now
        return self.count >= records or now - first >= interval

    def flushed(self, unflushed: int) -> None:
        """After a flush: every add but the newest ``unflushed`` ones is durable."""
        if not self.cadenced or unflushed <= 0:
            self.durable = self.last
            self.reset()
            return
        newest = self.adds.keep_newest(unflushed)
        if newest is not None:
            self.durable = newest
        self.count = len(self.adds)

    def reset(self) -> None:
        self.count = 0
        self.first_at = None
        self.adds.clear()

    def oldest_age(self, now: float) -> float:
        if self.adds:
            return now - self.adds.oldest_time()
        return now - self.first_at if self.first_at is not None else 0.0


def _payload(raw: RawRecord) -> Any:
    p = raw.payload
    return p.decode("utf-8", "replace") if isinstance(p, bytes) else p
