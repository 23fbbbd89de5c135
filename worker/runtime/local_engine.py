"""``worker local --engine kcl``: fixtures -> moto table -> stream -> ``worker daemon`` (KCL) -> sinks.

The report has the shape of ``worker local``'s: ``records`` and ``kinds`` are
the stream's records (what KCL delivered), ``changes`` and ``deadletters`` the
shard processes' counters (their metric files), each sink's section is read
from its target, plus ``engines`` and ``leases`` (``{shard: checkpoint}``
from the lease table KCL wrote).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, TextIO

from worker.runtime import local_kcl

Items = list[tuple[str, dict[str, Any]]]  # (file:line, item) as worker.sources.table_items.read_items gives them

DAEMON_TIMEOUT_SECONDS = 300.0  # KCL's first start waits up to 30 s before its first shard sync


def execute(
    cfg: Any,
    fixtures: list[str],
    *,
    config_path: str | None,
    stack: contextlib.ExitStack,
    progress: TextIO | None = None,
    items: Items | None = None,
    key_text: str | None = None,
) -> dict[str, Any]:
    """Run the fixtures through the real KCL chain; ``progress`` (a terminal) gets one updating line.

    With ``items`` (``worker local --table-items``) the table is loaded before its stream is
    enabled, the daemon starts first, and the fixtures' writes race a backfill's scan for real
    while KCL consumes the stream; the snapshot is applied through a pipeline of this process.
    """
    from worker.app import build_pipeline
    from worker.aws import client
    from worker.leases import lease_table
    from worker.metrics import Collector
    from worker.sinks import Reporting
    from worker.sources import fixtures as fixture_source

    lib = local_kcl.classpath_dir(os.environ)
    label = local_kcl.engine_label(lib)
    cfg = _with_moto(cfg, stack)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    show = _Progress(progress)

    ddb = client(cfg, "dynamodb")
    table_name = cfg.worker.table
    batch, skipped = local_kcl.changes(fixture_source.read(fixtures))
    names, types = local_kcl.key_schema(batch)
    loaded = 0
    if items is None:
        arn = local_kcl.create_source_table(ddb, table_name, names, types)
    else:
        from worker.aws import stream_arn
        from worker.sources import table_items

        key = (
            table_items.KeySchema.parse(key_text)
            if key_text
            else table_items.KeySchema(tuple(zip(names, types, strict=True)))
        )
        loaded = table_items.create_table(ddb, table_name, key, items)
        arn = stream_arn(ddb, table_name)
    pipeline = build_pipeline(cfg, provision=True)  # the sinks' tables, bucket and index exist before KCL runs
    if items is None:
        local_kcl.write_changes(ddb, table_name, batch, lambda n: show(written=n, total=len(batch)))

    work = local_kcl.run_dir()
    metrics_dir = work / "metrics"
    env = local_kcl.daemon_env(
        os.environ,
        endpoint_url=cfg.aws.endpoint_url,
        search_url=cfg.search.url if cfg.search is not None else None,
        metrics_dir=str(metrics_dir),
        lib=lib,
    )
    argv = local_kcl.daemon_argv(config_path, local_kcl.LOCAL_PROPERTIES)
    log_path = work / "daemon.log"
    proc = local_kcl.start_daemon(argv, env, log_path)
    stack.callback(local_kcl.kill_group, proc)  # whatever happens, nothing is left running
    backfill = None
    if items is not None:
        backfill = _race_backfill(cfg, ddb, batch, stack, lambda n: show(written=n, total=len(batch)))
        backfill.apply(pipeline)
    content = local_kcl.read_stream(client(cfg, "dynamodbstreams"), arn)
    collector = Collector(metrics_dir)

    def on_poll(leases: dict[str, str | None]) -> None:
        delivered = collector.collect().totals.counts["records"] if metrics_dir.is_dir() else 0
        show(written=len(batch), total=len(batch), delivered=delivered, checkpointed=content.checkpointed(leases))

    table = lease_table(cfg)
    try:
        local_kcl.wait_checkpointed(
            ddb, table, content, alive=lambda: proc.poll() is None, timeout=DAEMON_TIMEOUT_SECONDS, progress=on_poll
        )
    except Exception:
        show.done()
        sys.stderr.write(f"worker daemon log: {log_path}\n")
        raise
    code = local_kcl.stop_daemon(proc)
    show.done()
    totals = Collector(metrics_dir).collect().totals
    report: dict[str, Any] = {
        "records": content.records,
        "kinds": dict(content.kinds),
        "changes": dict(sorted(totals.changes.items())),
        "deadletters": totals.counts["deadletters"],
        "engines": {"stream": label},
        "leases": dict(local_kcl.checkpoints(ddb, table)),
    }
    if skipped:
        report["skipped"] = skipped
    if backfill is not None:
        from worker.sources.table_items import summary

        report["backfill"] = summary(backfill, ddb, table_name, loaded)
    if code != 0:
        report["stopped"] = f"worker daemon exited with {code} (log: {log_path})"
    for sink in pipeline.sinks:
        if isinstance(sink, Reporting):
            report[sink.name] = sink.report()
    pipeline.close()
    return report


def _race_backfill(cfg: Any, ddb: Any, batch: list[local_kcl.Change], stack: contextlib.ExitStack, written: Any) -> Any:
    """Scan the table while the fixtures' writes land (KCL consumes them meanwhile); the scan, closed."""
    import tempfile
    from pathlib import Path

    from worker.aws import client
    from worker.sources.backfill import Backfill, ScanOptions
    from worker.sources.table_items import race

    state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="worker-backfill-")))
    options = ScanOptions(segments=2, page_items=25, settle_seconds=0)
    backfill = Backfill(ddb, client(cfg, "dynamodbstreams"), cfg.worker.table, state, options)
    backfill.start()
    done = [0]

    def writer(change: local_kcl.Change) -> Any:
        def write() -> None:
            local_kcl.write_changes(ddb, cfg.worker.table, [change], lambda _n: None)
            done[0] += 1
            written(done[0])

        return write

    race(backfill, [writer(c) for c in batch])
    return backfill


def _with_moto(cfg: Any, stack: contextlib.ExitStack) -> Any:
    """The stream needs DynamoDB: moto when no endpoint is configured (sinks may not have started it)."""
    if cfg.aws.endpoint_url:
        return cfg
    from worker.emulators import fake_aws_credentials, start_moto

    stack.enter_context(fake_aws_credentials())
    moto = start_moto()
    stack.callback(moto.stop)
    return dataclasses.replace(cfg, aws=dataclasses.replace(cfg.aws, endpoint_url=moto.url))


class _Progress:
    """``written a/b, delivered c, checkpointed d`` on one terminal line (nothing when not a terminal)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.state = {"written": 0, "total": 0, "delivered": 0, "checkpointed": 0}
        self.shown = False

    def __call__(self, **values: int) -> None:
        self.state.update(values)
        if self.stream is None:
            return
        s = self.state
        self.stream.write(
            f"\r[kcl] written {s['written']}/{s['total']}, delivered {s['delivered']}, "
            f"checkpointed {s['checkpointed']}\x1b[K"
        )
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.stream is not None and self.shown:
            self.stream.write("\n")
            self.stream.flush()
