"""The KCL multilang record processor: one shard, one process, one pipeline.

The KCL 3 daemon (``launcher/``) starts ``worker kcl`` once per shard lease and
talks JSON lines over its stdin/stdout; amazon_kclpy's ``KCLProcess`` speaks
that protocol and calls :class:`ShardProcessor`.

Guarantees:

* **Checkpoint after durability, at the commit interval.** ``processRecords``
  adds the batch to the pipeline (each sink flushes on its own cadence) and
  acknowledges it without waiting for every sink. At most once per
  ``[pipeline] commit_interval`` it checkpoints the newest record that the
  pipeline reports durable in every sink and the dead letters
  (:meth:`~worker.pipeline.Pipeline.commit`), never anything newer. Empty
  batches (``callProcessRecordsEvenForEmptyRecordList``) run the cadence too,
  so an idle shard still flushes and checkpoints.
* **Never a silent acknowledgement.** kclpy catches exceptions from the
  processor, logs them and acknowledges the batch anyway. So every callback
  here is guarded: on an unrecoverable failure (``StopProcessing``, retries
  exhausted, anything unexpected) the process logs, writes its final metrics
  and leaves with ``os._exit(1)`` *without replying*. The KCL daemon then
  stops (KCL's multilang processor exits the JVM when a child fails) and the
  shard resumes from its last checkpoint. Bad records never get here: the
  pipeline parks them; transient sink failures are retried by the pipeline.
* **Checkpoint errors.** ``ThrottlingException`` and
  ``KinesisClientLibDependencyException`` are retried with backoff
  (``[kcl] checkpoint_retries``). If they persist after a batch, the batch is
  still acknowledged (it is durable; the next checkpoint covers it).
  ``ShutdownException`` means the lease is going away: no retry, the daemon
  follows with ``leaseLost``. Anything else (``InvalidStateException``, a
  rejected sequence number) stops the process.
* **Lease lost:** buffered work is dropped, nothing is checkpointed.
  **Shard ended:** flush, then checkpoint ``SHARD_END`` (must succeed, or the
  process stops so the shard end is redone). **Shutdown requested** (graceful
  hand-off): flush, then checkpoint the last durable record.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor as kclpy_v3

from worker.log import get_logger
from worker.metrics import ShardMetricsFile
from worker.pipeline import Pipeline, Position
from worker.positions import AckLog
from worker.records import RawRecord
from worker.retry import RetryPolicy

# The shard process's garbage collector: young-generation thresholds (see settle_heap)
GC_THRESHOLDS = (50_000, 20, 20)

RETRYABLE_CHECKPOINT_ERRORS = frozenset({"ThrottlingException", "KinesisClientLibDependencyException"})
LEASE_GONE_ERRORS = frozenset({"ShutdownException"})


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Called after each batch. A batch's objects are freed when the sinks flush, but
    the few that outlive it keep the allocator's arenas partly used, and glibc only
    returns memory from the top of its heap: measured with ``bench footprint``, a
    shard process grew from 66 to 87 MiB over 10,000 records without this and to
    79 MiB with it, for about 1 ms per batch of 1,000 records.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], object] | None:
    import ctypes  # here, not at start-up: the first batch pays its import, not every spawn

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


class CheckpointFailed(Exception):
    """A checkpoint could not be written (the error name from KCL is in ``error``)."""

    def __init__(self, error: str, *, exhausted: bool) -> None:
        super().__init__(f"checkpoint failed: {error}" + (" (retries exhausted)" if exhausted else ""))
        self.error = error
        self.exhausted = exhausted


def exit_now(code: int = 1) -> NoReturn:
    """Leave at once, without kclpy writing the ``status`` acknowledgement."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class ShardProcessor(kclpy_v3.RecordProcessorBase):  # type: ignore[misc]
    """amazon_kclpy v3 record processor feeding one :class:`~worker.pipeline.Pipeline`."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        checkpoint_retry: RetryPolicy,
        metrics_dir: str | None = None,
        die: Callable[[int], NoReturn] = exit_now,
        clock: Callable[[], float] = time.time,
        release_heap: Callable[[], object] = release_free_heap,
        log: Any = None,
    ) -> None:
        self.pipeline = pipeline
        self.release_heap = release_heap
        self.checkpoint_retry = checkpoint_retry
        self.metrics_dir = metrics_dir
        self.die = die
        self.clock = clock
        self.log = log or get_logger("worker.kcl")
        self.shard_id = "unknown"
        self.metrics = ShardMetricsFile(None, self.shard_id, clock=clock)
        self.last_durable: tuple[str, int | None, float | None] | None = None  # sequence, sub, created
        self.unacked = AckLog()  # (sequence, subsequence, created) added, not yet checkpointed
        self.checkpointer: Any = None  # the latest batch's
        self.closed = False

    # -- kclpy callbacks (each one guarded: see the module docstring) ------------------

    def initialize(self, initialize_input: Any) -> None:
        self._guard("initialize", self._initialize, initialize_input)

    def process_records(self, process_records_input: Any) -> None:
        self._guard("processRecords", self._process_records, process_records_input)

    def lease_lost(self, lease_lost_input: Any) -> None:
        self._guard("leaseLost", self._lease_lost)

    def shard_ended(self, shard_ended_input: Any) -> None:
        self._guard("shardEnded", self._shard_ended, shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self._guard("shutdownRequested", self._shutdown_requested, shutdown_requested_input.checkpointer)

    def finish(self) -> None:
        """End of input (the daemon closed our stdin): release everything unflushed."""
        self._close("input closed")

    # -- implementation ------------------------------------------------------------------

    def _guard(self, action: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # includes SystemExit/KeyboardInterrupt: still no acknowledgement
            where = f"{self.shard_id}/{self.last_durable[0]}" if self.last_durable else self.shard_id
            self.log.critical(
                "stopping without acknowledging; the shard resumes from its last checkpoint",
                action=action,
                shard=self.shard_id,
                last_durable=where,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=not isinstance(exc, CheckpointFailed | SystemExit),
            )
            self.metrics.close(self.pipeline.stats, state="failed")
            self.die(1)

    def _initialize(self, inp: Any) -> None:
        self.shard_id = str(inp.shard_id)
        self.log = self.log.bind(shard=self.shard_id)
        self.metrics = ShardMetricsFile(self.metrics_dir, self.shard_id, clock=self.clock)
        self.metrics.update(self.pipeline.stats)
        self.log.info("shard process started", start=inp.sequence_number, sub_sequence=inp.sub_sequence_number)

    def _process_records(self, inp: Any) -> None:
        records: Sequence[Any] = inp.records
        self.checkpointer = inp.checkpointer
        if not records:  # idle: the sinks' cadence and the commit interval still run
            self.pipeline.flush_due()
            self._commit(self.pipeline.commit())
            return
        shard = self.shard_id
        batch = [
            RawRecord(
                payload=_as_dict(r), where=f"{shard}/{r.sequence_number}", shard_id=shard, sequence=r.sequence_number
            )
            for r in records
        ]
        created = [r.timestamp_millis / 1000 for r in records]
        for r, c in zip(records, created, strict=True):
            self.unacked.append(str(r.sequence_number), r.sub_sequence_number, c)
        self.metrics.batch_started(min(created))
        self.pipeline.add(batch)
        # The checkpoint is exactly the position the pipeline reports durable, never newer.
        self._commit(self.pipeline.commit())
        self.metrics.batch_done(self.pipeline.stats, max(created))
        self.release_heap()

    def _commit(self, position: Position) -> None:
        """Checkpoint the durable position (if any) with the latest checkpointer."""
        durable = position.sequences.get(self.shard_id)
        if durable is None:
            return
        entry = self.unacked.pop_through(durable)
        if entry is None:  # not a record of ours: never checkpoint what we cannot place
            raise CheckpointFailed(f"durable position {durable} is not a record of this lease", exhausted=False)
        seq, sub, created = entry
        self.last_durable = (seq, sub, created)
        try:
            self._checkpoint(self.checkpointer, seq, sub, created)
        except CheckpointFailed as exc:
            if not exc.exhausted and exc.error not in LEASE_GONE_ERRORS:
                raise
            # Durable but not checkpointed: acknowledging is safe (the next checkpoint covers it,
            # or, the lease being lost, the next owner replays it idempotently).
            if exc.exhausted:
                self.log.error("checkpoint gave up; continuing", sequence=seq, error=exc.error)

    def _lease_lost(self) -> None:
        self.pipeline.discard()
        self.unacked.clear()
        self.log.info("lease lost; unflushed work dropped, nothing checkpointed")
        self._close("lease lost")

    def _shard_ended(self, checkpointer: Any) -> None:
        self._record_durable(self.pipeline.flush())
        created = self.last_durable[2] if self.last_durable else None
        try:
            self._checkpoint(checkpointer, None, None, created)  # no sequence: SHARD_END
        except CheckpointFailed as exc:
            if exc.error not in LEASE_GONE_ERRORS:
                raise  # the shard end must be checkpointed for its children to start
        self.log.info("shard ended")
        self._close("shard ended")

    def _shutdown_requested(self, checkpointer: Any) -> None:
        self._record_durable(self.pipeline.flush())
        seq, sub, created = self.last_durable or (None, None, None)
        try:
            self._checkpoint(checkpointer, seq, sub, created)
        except CheckpointFailed as exc:
            if not exc.exhausted and exc.error not in LEASE_GONE_ERRORS:
                raise
            self.log.warning("final checkpoint not written", error=exc.error, sequence=seq)
        else:
            self.log.info("shutdown requested; checkpointed", sequence=seq)
        self.metrics.update(self.pipeline.stats)

    def _record_durable(self, position: Position) -> None:
        """After a full flush: the newest durable record becomes ``last_durable``."""
        durable = position.sequences.get(self.shard_id)
        if durable is None:
            return
        entry = self.unacked.last_of(durable)
        if entry is not None:
            self.last_durable = entry
        self.unacked.clear()

    def _checkpoint(self, checkpointer: Any, sequence: str | None, sub: int | None, created: float | None) -> None:
        """Checkpoint, retrying throttling; raises :class:`CheckpointFailed`.

        ``ShutdownException`` is logged here and raised as not exhausted; callers
        decide whether losing the lease at this point matters.
        """
        policy = self.checkpoint_retry
        for attempt in range(policy.attempts):
            try:
                checkpointer.checkpoint(sequence, sub)
            except CheckpointError as exc:
                error = str(exc.value)
                if error in LEASE_GONE_ERRORS:
                    self.log.info("checkpoint refused: lease is being lost", sequence=sequence, error=error)
                    raise CheckpointFailed(error, exhausted=False) from None
                if error not in RETRYABLE_CHECKPOINT_ERRORS:
                    raise CheckpointFailed(error, exhausted=False) from None
                if attempt + 1 >= policy.attempts:
                    raise CheckpointFailed(error, exhausted=True) from None
                wait = policy.delay(attempt)
                self.metrics.checkpoint_retried()
                self.log.warning("checkpoint retry", sequence=sequence, error=error, attempt=attempt + 1, wait=wait)
                policy.sleep(wait)
                continue
            self.metrics.checkpointed(sequence, created)
            return

    def _close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.pipeline.close()
        self.metrics.close(self.pipeline.stats)
        self.log.debug("shard process closing", reason=why)


def _as_dict(record: Any) -> dict[str, Any]:
    """A kclpy ``Record`` as the multilang record dict :func:`worker.decode.decode` accepts."""
    return {
        "data": record.data,
        "partitionKey": record.partition_key,
        "sequenceNumber": record.sequence_number,
        "subSequenceNumber": record.sub_sequence_number,
        "approximateArrivalTimestamp": record.timestamp_millis,
    }


def settle_heap(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Tune the garbage collector for a shard process, once its start-up is done.

    Start-up leaves a large heap of long-lived objects (botocore's service
    models, the clients, the configuration). Left in the collector's oldest
    generation, every full collection walks all of them again: measured with
    ``bench e2e`` (low cardinality), the collector took about 21% of the
    process's CPU, three quarters of it in full collections. Freezing that heap
    (``gc.freeze``: never collected, never walked) and collecting the young
    generations less often (each batch allocates a few hundred thousand
    objects, most of them alive until the sinks flush) took it to about 5%.
    Cyclic garbage made after start-up is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def serve(
    cfg: Any,
    *,
    stdin: TextIO,
    stdout: TextIO,
    pipeline: Pipeline | None = None,
    metrics_dir: str | None = None,
) -> int:
    """Run the multilang protocol on ``stdin``/``stdout`` until the daemon closes stdin.

    ``stdout`` must be the protocol stream and nothing else may write to it
    (``worker kcl`` points fd 1 and ``sys.stdout`` at stderr before calling this).
    """
    from amazon_kclpy import kcl

    from worker.app import build_pipeline

    # The daemon, not a terminal's Ctrl-C, ends a shard process (stdin EOF); a SIGINT
    # sent to the whole process group must not kill us before the graceful hand-off.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    p = cfg.pipeline
    processor = ShardProcessor(
        pipeline if pipeline is not None else build_pipeline(cfg),
        checkpoint_retry=RetryPolicy(
            attempts=cfg.kcl.checkpoint_retries, base=p.retry_base_seconds, cap=p.retry_max_seconds
        ),
        metrics_dir=metrics_dir,
    )
    settle_heap()
    kcl.KCLProcess(processor, input_file=stdin, output_file=stdout, error_file=sys.stderr).run()
    processor.finish()
    return 0
