"""One pipeline for every source: decode -> diff -> sinks -> dead letters -> checkpoint.

Sources hand over :class:`~worker.records.RawRecord` batches; the pipeline
decodes, diffs and routes each change to every sink, then flushes. The position
it returns is safe to checkpoint: **every sink and the dead-letter location have
made every record up to it durable** (quix-streams' rule: flush, then commit; a
failed flush aborts the commit).

Error actions (see :mod:`worker.errors`):

* a decode error or a sink's ``RecordError`` parks that record (with the sink's
  name) and the batch goes on;
* a ``RetryableError`` from a flush is retried with backoff and jitter; the
  sink keeps its buffer, so the retry rewrites the same data (idempotent);
* anything else, or retries exhausted, raises :class:`StopProcessing`: the
  caller must not checkpoint and should exit non-zero.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.decode import decode
from worker.diff import Change, diff
from worker.errors import Action, FatalError, RecordError, action_of
from worker.records import RawRecord, StreamRecord
from worker.retry import RetryPolicy
from worker.sinks import DeadLetters, Sink

__all__ = ["Pipeline", "Position", "Stats", "StopProcessing"]


class StopProcessing(FatalError):
    """The pipeline cannot go on; nothing since the last checkpoint may be acknowledged."""


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
    last_created_at: float | None = None  # ApproximateCreationDateTime of the newest record


@dataclass(frozen=True)
class Position:
    """The last durable sequence number per shard (``where`` for records without one)."""

    sequences: dict[str, str]

    def __bool__(self) -> bool:
        return bool(self.sequences)


class Pipeline:
    """Routes changes to sinks; flushes and reports checkpoint-safe positions.

    Not thread-safe; one pipeline per shard process (the KCL model).
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        deadletters: DeadLetters,
        *,
        retry: RetryPolicy | None = None,
        max_batch_records: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
    ) -> None:
        self.sinks = list(sinks)
        self.deadletters = deadletters
        self.retry = retry or RetryPolicy()
        self.max_batch_records = max_batch_records
        self.clock = clock
        self.log = log or structlog.get_logger("worker.pipeline")
        self.stats = Stats()
        self._pending: dict[str, str] = {}  # added, not yet flushed
        self._durable: dict[str, str] = {}  # flushed, not yet reported by flush()
        self._pending_count = 0
        if self.retry.on_retry is None:
            self.retry.on_retry = self._on_retry

    # -- feeding -------------------------------------------------------------------

    def process(self, batch: Iterable[RawRecord]) -> Position:
        """Add a batch and flush it; returns the position now safe to checkpoint."""
        self.add(batch)
        return self.flush()

    def add(self, batch: Iterable[RawRecord]) -> None:
        """Decode, diff and add records to every sink; flushes every ``max_batch_records``.

        A flush triggered here is durable, but the caller only learns the
        position from :meth:`flush`; it is never acknowledged early.
        """
        for raw in batch:
            self.add_one(raw)
            if self._pending_count >= self.max_batch_records:
                self._flush_sinks()

    def add_one(self, raw: RawRecord) -> Change | None:
        stats = self.stats
        stats.records += 1
        try:
            record = decode(raw)
        except RecordError as exc:
            self.park(exc.located(raw.where, _payload(raw)))
            self._advance(raw.shard_id or raw.where, raw.sequence, raw.where)
            return None
        return self.add_record(record, position=raw.sequence)

    def add_record(self, record: StreamRecord, *, position: str | None = None) -> Change | None:
        """Add an already decoded record (sources that decode themselves, e.g. replays).

        ``position`` is the source's position of the record (default: its
        sequence number); :meth:`flush` reports it once the record is durable.
        """
        seq = position or record.sequence_number
        stats = self.stats
        # _value_ is the plain attribute behind Enum.value (a Python-level property): per record
        stats.kinds[record.event_name._value_] += 1
        try:
            change = diff(record)
        except RecordError as exc:
            self.park(exc.located(record.location, record.original()))
            self._advance(record.shard_id or record.where, seq, record.where)
            return None
        stats.changes["noop" if change.noop else change.kind._value_] += 1
        for sink in self.sinks:
            try:
                sink.add(change)
            except RecordError as exc:
                err = exc.located(record.location, record.original())
                err.sink = err.sink or sink.name
                self.park(err)
            except Exception as exc:
                if action_of(exc) is Action.PARK:  # a WorkerError subclass with PARK
                    self.park(RecordError(str(exc), where=record.location, payload=record.original(), sink=sink.name))
                    continue
                raise StopProcessing(f"{sink.name}: add failed at {record.location}: {exc}") from exc
        self._advance(record.shard_id or record.where, seq, record.where)
        return change

    # -- flushing ------------------------------------------------------------------

    def flush(self) -> Position:
        """Flush every sink, then the dead letters; return what is now safe to checkpoint."""
        self._flush_sinks()
        done = self._durable
        self._durable = {}
        return Position(done)

    def _flush_sinks(self) -> None:
        pending, self._pending = self._pending, {}
        self._pending_count = 0
        for sink in self.sinks:
            started = self.clock()
            try:
                rejected = self.retry.call(sink.flush, f"flush {sink.name}")
            except Exception as exc:
                raise StopProcessing(f"{sink.name}: flush failed: {exc}") from exc
            finally:
                secs = self.stats.sink_seconds
                secs[sink.name] = secs.get(sink.name, 0.0) + self.clock() - started
            for err in rejected:
                err.sink = err.sink or sink.name
                self.park(err)
        try:
            self.retry.call(self.deadletters.flush, "flush dead letters")
        except Exception as exc:
            raise StopProcessing(f"dead letters: flush failed: {exc}") from exc
        self.stats.flushes += 1
        self._durable.update(pending)

    def close(self) -> None:
        """Close sinks without flushing (unflushed work is dropped, never acknowledged)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing must not mask the reason we are closing
                self.log.warning("sink close failed", sink=sink.name, error=str(exc))
        self.deadletters.close()
        self._pending.clear()
        self._durable = {}

    def discard(self) -> None:
        """Forget everything not yet flushed (lease lost): nothing of it is acknowledged."""
        self._pending.clear()
        self._pending_count = 0
        self._durable = {}

    # -- internals -----------------------------------------------------------------

    def _advance(self, shard: str, sequence: str | None, where: str) -> None:
        self._pending_count += 1
        if sequence is not None:
            self._pending[shard] = sequence

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


def _payload(raw: RawRecord) -> Any:
    p = raw.payload
    return p.decode("utf-8", "replace") if isinstance(p, bytes) else p
