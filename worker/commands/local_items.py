"""``worker local --table-items``: items that predate the stream, backfilled while the fixtures'
writes race the scan, then the stream consumed: every sink ends equal to the final table.

Steps (on the emulated AWS of ``worker local``):

1. create the source table, load the items, then enable its stream (NEW_AND_OLD_IMAGES);
2. scan it (:class:`~worker.sources.backfill.Backfill`, step by step) while the
   fixture records are written to it (INSERT/MODIFY: PutItem of the new image;
   REMOVE: DeleteItem), a share of them after every round of scan pages;
3. close the change index and apply the snapshot through the pipeline;
4. consume the stream from its beginning through the same pipeline.

:func:`~worker.sources.table_items.race` is the scan-versus-writes step alone,
shared with ``--engine kcl`` (:mod:`worker.runtime.local_engine`), whose consumer
is the real KCL daemon running while the scan races the writes.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.records import RawRecord, StreamRecord


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
    from worker.app import build_pipeline
    from worker.aws import client, stream_arn
    from worker.decode import decode
    from worker.errors import ConfigError, RecordError
    from worker.log import get_logger
    from worker.pipeline import StopProcessing
    from worker.sources import fixtures as fixture_source
    from worker.sources import table_items
    from worker.sources.backfill import Backfill, ScanOptions
    from worker.sources.poller import poll
    from worker.sources.table_items import race, summary

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
        get_logger("worker.local").error("stopped", error=stopped)
    report = report_of(pipeline, stopped)
    report["backfill"] = summary(backfill, ddb, table, loaded)
    pipeline.close()
    return report
