"""``worker local --table-items``: items that predate the stream, backfilled while the fixtures'
writes race the scan, then the stream consumed: every sink ends equal to the final table.

Steps (on the emulated AWS of ``worker local``):

1. create the source table, load the items, then enable its stream (NEW_AND_OLD_IMAGES);
2. scan it (:class:`~worker.sources.backfill.Backfill`, step by step) while the
   fixture records are written to it (INSERT/MODIFY: PutItem of the new image;
   REMOVE: DeleteItem), a share of them after every round of scan pages;
3. close the change index and apply the snapshot through the pipeline;
4. consume the stream from its beginning through the same pipeline.

:func:`race` is the scan-versus-writes step alone, for engines that consume the
stream themselves (``--engine kcl``): they start their consumer, call it, then
apply the snapshot with :meth:`Backfill.apply` on a pipeline of their own.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker.records import RawRecord, StreamRecord


def race(backfill: Any, writes: Sequence[Callable[[], None]], *, rounds: int | None = None) -> None:
    """Scan every segment to its end, running a share of ``writes`` after each round of pages
    (one page per open segment); whatever is left is written before the index is closed."""
    progress = backfill.progress
    total_pages = max(1, sum(1 for s in progress.segments if not s.done))
    estimate = rounds or max(1, backfill.estimate // max(1, backfill.options.page_items * total_pages) + 1)
    share = max(1, -(-len(writes) // estimate))
    todo = list(writes)
    open_segments = [i for i, s in enumerate(progress.segments) if not s.done]
    while open_segments:
        open_segments = [i for i in open_segments if backfill.scan_page(i)]
        for write in todo[:share]:
            write()
        del todo[:share]
    for write in todo:
        write()
    backfill.close_index()


def execute_with_items(
    cfg: Any,
    fixtures: list[str],
    items: list[tuple[str, dict[str, Any]]],
    key_text: str | None,
    *,
    stack: contextlib.ExitStack,
    report_of: Callable[[Any, str | None], dict[str, Any]],
) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; ``items`` as :func:`~worker.sources.table_items.read_items` gives
    them; ``report_of(pipeline, stopped)`` builds the report ``worker local`` prints."""
    import structlog

    from worker.app import build_pipeline
    from worker.aws import client, stream_arn
    from worker.decode import decode
    from worker.errors import ConfigError, RecordError
    from worker.pipeline import StopProcessing
    from worker.sources import fixtures as fixture_source
    from worker.sources import table_items
    from worker.sources.backfill import Backfill, ScanOptions
    from worker.sources.poller import poll

    table = cfg.worker.table
    pipeline = build_pipeline(cfg, provision=True)
    records: list[StreamRecord] = []
    for raw in fixture_source.read(fixtures):
        try:
            records.append(decode(raw))
        except RecordError as exc:
            pipeline.park(exc.located(raw.where, raw.payload))
    key = table_items.KeySchema.parse(key_text) if key_text else table_items.KeySchema.infer(records)
    if key is None:
        raise ConfigError("--table-key", "cannot infer the table's key from the fixtures: pass --table-key NAME[:S]")
    ddb, streams = client(cfg, "dynamodb"), client(cfg, "dynamodbstreams")
    loaded = table_items.create_table(ddb, table, key, items)
    state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="worker-backfill-")))
    backfill = Backfill(ddb, streams, table, state, ScanOptions(segments=2, page_items=25, settle_seconds=0))
    backfill.start()

    def writer(record: StreamRecord) -> Callable[[], None]:
        def write() -> None:
            try:
                table_items.apply_change(ddb, table, record)
            except RecordError as exc:
                pipeline.park(exc.located(record.location, record.original()))

        return write

    stopped = None
    try:
        race(backfill, [writer(r) for r in records])
        backfill.apply(pipeline)
        arn = stream_arn(ddb, table)
        pipeline.add(
            RawRecord(rec, f"{sid}/{rec['dynamodb']['SequenceNumber']}", sid) for sid, rec in poll(streams, arn)
        )
        pipeline.flush()
    except StopProcessing as exc:
        stopped = str(exc)
        structlog.get_logger("worker.local").error("stopped", error=stopped)
    progress = backfill.progress
    assert progress is not None
    final = sum(page.get("Count", 0) for page in ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT"))
    report = report_of(pipeline, stopped)
    report["backfill"] = {
        "items_loaded": loaded,
        "final_items": final,
        "scanned": progress.scanned,
        "changed_during_scan": progress.changed,
        "snapshot_records": progress.extra.get("snapshot_records", 0),
        "consumed_rcu": round(progress.consumed_rcu, 1),
    }
    pipeline.close()
    return report
