"""``worker replay``: feed a time range of the S3 archive through the pipeline and sinks again.

    worker replay --from-archive s3://bucket/prefix --since T [--until T] [--sinks NAMES]
                  [--table NAME] [--dry-run] [--resume] [--json] [--config FILE]
    worker replay --rebuild AGGREGATES [--into TABLE] [--since T] ...

What it guarantees:

* **Every record of the range, once, in order.** The hour partitions of
  ``[since, until)`` are listed (partition pruning); objects are merged per
  shard by sequence number, duplicates (overlapping objects written by
  redeliveries) removed; shards go parents first (by the creation time
  DynamoDB embeds in shard ids; the archive does not know the lineage), each
  shard completely before the next. Records outside the range in the edge
  hours are left out.
* **The same pipeline** as live processing (``worker.app.build_pipeline``),
  so the sinks' idempotence makes a replay of a range already applied change
  nothing. By default every configured sink but the archive itself is fed.
* **Damage is never skipped silently**: a bad gzip stream, a line that is not
  JSON or a record that does not decode is logged with ``s3://bucket/key:line``,
  parked in the dead letters, counted in the summary; the replay goes on.
* **Resumable**: after every flush of the pipeline the state file records, per
  shard, the last sequence number now durable in the sinks, and the objects
  done. ``--resume`` skips those objects and records. Without ``--resume`` a
  run starts over (harmless, only slower).
* ``--rebuild`` recomputes aggregates from the archive into an **empty** table
  (``--into`` another one, or the configured one emptied): it refuses a table
  that holds anything, naming it. Starting from nothing, every record counts
  once, however long ago the aggregate sink's per-shard bookkeeping forgot the
  shards. Stop the live workers for that table meanwhile (or rebuild into a
  new table and switch): two writers of one shard would defeat its high-water
  marks. When the archive holds snapshots (``worker backfill``), the rebuild
  starts from the latest one taken at or before ``--since`` (else the latest
  before ``--until``) and replays the records from its position on, leaving the
  other snapshots out: state older than the stream's 24 hours is rebuilt too.

Progress goes to stderr (a bar on a terminal, a log line every 10 s
otherwise); the summary to stdout (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

UTC = dt.UTC
_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])(?: ?ago)?$")  # 24h, 24h ago, -24h: before now
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay a time range of the S3 archive into the sinks")
    p.add_argument("--from-archive", metavar="S3_URL", help="s3://bucket/prefix (default: the configured [archive])")
    p.add_argument(
        "--since",
        metavar="TIME",
        help="start (inclusive): ISO 8601 (UTC unless a zone is given), epoch seconds, or 24h / 7d (ago)",
    )
    p.add_argument("--until", metavar="TIME", default="now", help="end (exclusive), same forms (default: now)")
    p.add_argument(
        "--table",
        action="append",
        metavar="NAME",
        help="table partition(s) to replay (default: worker.table; '*': all)",
    )
    p.add_argument(
        "--sinks", metavar="NAMES", help="comma-separated sinks to feed (default: every configured sink but archive)"
    )
    p.add_argument("--dry-run", action="store_true", help="read, dedupe and count; feed no sink and park nothing")
    p.add_argument(
        "--rebuild",
        metavar="AGGREGATES",
        help="rebuild these aggregates (comma-separated names, or 'all') into an empty table",
    )
    p.add_argument("--into", metavar="TABLE", help="with --rebuild: the (empty or missing) table to rebuild into")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same range and sinks")
    p.add_argument("--state", metavar="FILE", help="progress file (default: <local.state_dir>/replay/<run id>.json)")
    p.add_argument("--provision", action="store_true", help="create missing tables/indexes of the sinks (emulators)")
    p.add_argument("--prefetch", type=int, default=4, metavar="N", help="objects read ahead in parallel (default: 4)")
    p.add_argument("--config", help="configuration file")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.set_defaults(run=run)


# -- options ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    bucket: str
    prefix: str
    since: dt.datetime
    until: dt.datetime
    tables: tuple[str, ...]  # () = every table in the archive
    sinks: tuple[str, ...]
    dry_run: bool = False
    rebuild: tuple[str, ...] = ()
    into: str | None = None
    resume: bool = False
    state: Path | None = None
    provision: bool = False
    prefetch: int = 4

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (a state file is only resumed by the same one)."""
        return {
            "archive": self.url,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "tables": list(self.tables),
            "sinks": list(self.sinks),
            "rebuild": list(self.rebuild),
            "into": self.into,
        }

    def resume_hint(self) -> str:
        """How to continue this run (relative times like ``24h`` would name another range later)."""
        return f"continue with the same options and --since {_iso(self.since)} --until {_iso(self.until)} --resume"

    def run_id(self) -> str:
        import orjson

        return hashlib.sha256(orjson.dumps(self.identity(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def parse_time(text: str, now: dt.datetime, flag: str) -> dt.datetime:
    """``now``; ``90m``/``24h``/``7d`` (or ``24h ago``, ``=-24h``) before now; epoch seconds; ISO 8601 (naive: UTC)."""
    from worker.errors import ConfigError

    t = text.strip()
    if t == "now":
        return now
    m = _RELATIVE.match(t)
    if m:
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if re.fullmatch(r"\d{9,11}(\.\d+)?", t):
        return dt.datetime.fromtimestamp(float(t), UTC)
    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            flag, f"not a time: {text!r} (ISO 8601, epoch seconds, now, or 24h for 24 hours ago)"
        ) from None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def options(args: argparse.Namespace, cfg: Any, now: dt.datetime) -> Options:
    from worker.app import configured_sinks
    from worker.errors import ConfigError
    from worker.sources.archive import split_url

    if args.from_archive:
        try:
            bucket, prefix = split_url(args.from_archive)
        except ValueError as exc:
            raise ConfigError("--from-archive", str(exc)) from None
    elif cfg.archive is not None:
        bucket, prefix = cfg.archive.bucket, cfg.archive.prefix
    else:
        raise ConfigError("--from-archive", "required when no [archive] is configured")
    rebuild: tuple[str, ...] = ()
    sinks: tuple[str, ...]
    if args.rebuild:
        if args.sinks:
            raise ConfigError("--sinks", "--rebuild feeds only the aggregates sink; drop --sinks")
        known = [a.name for a in cfg.aggregates]
        wanted = known if args.rebuild.strip() == "all" else [n.strip() for n in args.rebuild.split(",") if n.strip()]
        for n in wanted:
            if n not in known:
                raise ConfigError("--rebuild", f"no aggregate named {n!r} (configured: {', '.join(known) or 'none'})")
        if not wanted:
            raise ConfigError("--rebuild", "no aggregate configured")
        rebuild, sinks = tuple(wanted), ("aggregates",)
    elif args.sinks:
        sinks = tuple(n.strip() for n in args.sinks.split(",") if n.strip())
    else:
        sinks = tuple(n for n in configured_sinks(cfg) if n != "archive")
    if args.into and not args.rebuild:
        raise ConfigError("--into", "only with --rebuild")
    if not sinks and not args.dry_run:
        raise ConfigError("--sinks", "no sink to replay into (the archive itself is only fed when named)")
    if args.since is None and not rebuild:
        raise ConfigError("--since", "required (a replay of the whole archive must be asked for: --since 2000-01-01)")
    since = parse_time(args.since, now, "--since") if args.since else dt.datetime(2000, 1, 1, tzinfo=UTC)
    until = parse_time(args.until, now, "--until")
    if since >= until:
        raise ConfigError("--since", f"must be before --until ({_iso(since)} >= {_iso(until)})")
    tables: tuple[str, ...] = tuple(args.table or [cfg.worker.table])
    if "*" in tables:
        tables = ()
    if args.prefetch < 1:
        raise ConfigError("--prefetch", "must be >= 1")
    return Options(
        bucket=bucket,
        prefix=prefix,
        since=since,
        until=until,
        tables=tables,
        sinks=sinks,
        dry_run=args.dry_run,
        rebuild=rebuild,
        into=args.into,
        resume=args.resume,
        state=Path(args.state) if args.state else None,
        provision=args.provision,
        prefetch=args.prefetch,
    )


def _iso(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- state -------------------------------------------------------------------------------


@dataclass
class State:
    """Progress of one run, saved atomically after every flush of the pipeline."""

    path: Path | None
    run: dict[str, Any]
    streams: dict[str, str] = field(default_factory=dict)  # "table/stream" -> last durable sequence
    objects: dict[str, str] = field(default_factory=dict)  # key -> ETag of the version done
    rebuild_checked: list[str] = field(default_factory=list)  # tables found empty when the rebuild began
    complete: bool = False

    @classmethod
    def open(cls, path: Path | None, run: dict[str, Any], resume: bool, log: Any) -> tuple[State, bool]:
        """The state to use and whether it continues an earlier run."""
        import orjson

        if path is None or not path.exists():
            if resume:
                log.warning("nothing to resume: no progress file; starting over", state=str(path))
            return cls(path, run), False
        if not resume:
            log.info("earlier progress ignored (use --resume to continue it)", state=str(path))
            return cls(path, run), False
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            from worker.errors import FatalError

            raise FatalError(f"cannot read progress file {path}: {exc}") from exc
        if data.get("run") != run:
            from worker.errors import ConfigError

            raise ConfigError("--resume", f"{path} belongs to another run ({data.get('run')})")
        return cls(
            path,
            run,
            dict(data.get("streams", {})),
            dict(data.get("objects", {})),
            list(data.get("rebuild_checked", [])),
            bool(data.get("complete")),
        ), True

    def save(self) -> None:
        import orjson

        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        body = {
            "run": self.run,
            "updated_at": _iso(dt.datetime.now(UTC)),
            "complete": self.complete,
            "rebuild_checked": self.rebuild_checked,
            "streams": self.streams,
            "objects": self.objects,
        }
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


# -- progress ----------------------------------------------------------------------------


class Progress:
    """Records, bytes and ETA on stderr: a redrawn line on a terminal, a log line every 10 s otherwise."""

    def __init__(
        self,
        out: TextIO,
        total_bytes: int,
        total_objects: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
        log: Any = None,
        interval: float | None = None,
    ) -> None:
        self.out, self.total_bytes, self.total_objects, self.clock = out, total_bytes, total_objects, clock
        self.tty = out.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.1 if self.tty else 10.0)
        self.log = log
        self.started = clock()
        self.last = -1e9
        self.shown = False

    def update(self, records: int, done_bytes: int, objects: int, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = records / elapsed
        frac = done_bytes / self.total_bytes if self.total_bytes else 1.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else None
        if self.tty:
            width = 24
            filled = int(width * min(frac, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            text = (
                f"\rreplay [{bar}] {frac:4.0%}  {records:,} records  {_mb(done_bytes)}/{_mb(self.total_bytes)}"
                f"  objects {objects}/{self.total_objects}  {rate:,.0f} rec/s  ETA {_clock(eta)}\x1b[K"
            )
            self.out.write(text)
            self.out.flush()
            self.shown = True
        elif self.log is not None:
            self.log.info(
                "replay progress",
                records=records,
                bytes=done_bytes,
                total_bytes=self.total_bytes,
                objects=objects,
                total_objects=self.total_objects,
                records_per_second=round(rate, 1),
                eta_seconds=round(eta, 1) if eta is not None else None,
            )

    def clear(self) -> None:
        """Erase the bar before a log line is written under it."""
        if self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False

    def finish(self, records: int, done_bytes: int, objects: int) -> None:
        self.update(records, done_bytes, objects, force=True)
        if self.shown:
            self.out.write("\n")
            self.out.flush()
            self.shown = False


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# -- the run -----------------------------------------------------------------------------


@dataclass
class Summary:
    archive: str
    tables: list[str]
    since: str
    until: str
    sinks: list[str]
    dry_run: bool
    rebuild: list[str]
    resumed: bool = False
    state: str | None = None
    objects: dict[str, int] = field(default_factory=lambda: {"listed": 0, "read": 0, "skipped": 0})
    records: dict[str, int] = field(
        default_factory=lambda: {
            "read": 0,  # lines with a sequence number (= the sum of the four below and undecodable)
            "duplicates": 0,
            "outside_range": 0,
            "already_done": 0,
            "replayed": 0,
            "undecodable": 0,
        }
    )
    bytes_read: int = 0
    parked: int = 0
    shards: int = 0
    ignored_keys: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False
    snapshot: str | None = None  # --rebuild: the snapshot it started from (worker.sources.snapshot)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["records_per_second"] = round(self.records["replayed"] / self.seconds, 1) if self.seconds else 0.0
        return out

    def render(self) -> str:
        r, o = self.records, self.objects
        mode = " (dry run)" if self.dry_run else ""
        verb = "would be replayed" if self.dry_run else "replayed"
        lines = [
            f"worker replay{mode}: {self.archive} tables {', '.join(self.tables) or '(none)'}",
            f"  range: from {self.since} until {self.until}",
            f"  objects: {o['listed']} listed, {o['read']} read, {o['skipped']} skipped (done in an earlier run)",
            f"  records: {r['read']} read, {r['duplicates']} duplicates removed,"
            f" {r['outside_range']} outside the range, {r['already_done']} already done, {r['replayed']} {verb}",
            f"  shards: {self.shards}   bytes read: {self.bytes_read:,}   took {self.seconds:.1f} s",
        ]
        if self.rebuild:
            lines.append(f"  rebuilt aggregates: {', '.join(self.rebuild)}")
        if self.snapshot:
            lines.append(f"  started from snapshot {self.snapshot} (records from its position on)")
        lines.append(f"  sinks: {', '.join(self.sinks) or 'none'}")
        if self.parked:
            where = "reported only (dry run)" if self.dry_run else "parked in the dead letters"
            lines.append(f"  DAMAGED: {self.parked} lines/objects could not be read; {where} (see the log)")
        if self.ignored_keys:
            lines.append(
                f"  ignored {len(self.ignored_keys)} keys that are not archive objects, e.g. {self.ignored_keys[0]}"
            )
        if self.misplaced:
            lines.append(f"  WARNING: {len(self.misplaced)} records below their object's first sequence number")
        return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import orjson

    from worker import config, log

    cfg = config.load(args.config)
    log.configure(cfg.worker.log_format, cfg.worker.log_level)
    opts = options(args, cfg, dt.datetime.now(UTC))
    if opts.state is None:
        opts = dataclasses.replace(opts, state=cfg.resolve(cfg.local.state_dir) / "replay" / f"{opts.run_id()}.json")
    try:
        summary = execute(cfg, opts)
    except KeyboardInterrupt:
        print(f"\nworker replay: interrupted; progress is in {opts.state}; {opts.resume_hint()}", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(summary.as_dict(), option=orjson.OPT_SORT_KEYS) + b"\n")
        sys.stdout.flush()
    else:
        sys.stdout.write(summary.render())
    return 0


def execute(
    cfg: Any,
    opts: Options,
    *,
    s3: Any = None,
    pipeline: Any = None,
    err: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Run one replay; ``pipeline``/``s3`` are injected by tests (else built from ``cfg``)."""
    import structlog

    from worker.aws import client
    from worker.errors import RecordError
    from worker.pipeline import StopProcessing
    from worker.records import StreamRecord
    from worker.sources import archive, snapshot

    logger = structlog.get_logger("worker.replay")
    started = clock()
    s3 = s3 if s3 is not None else client(cfg, "s3")
    summary = Summary(
        opts.url,
        list(opts.tables),
        _iso(opts.since),
        _iso(opts.until),
        list(opts.sinks),
        opts.dry_run,
        list(opts.rebuild),
    )
    tables = list(opts.tables) or archive.list_tables(s3, opts.bucket, opts.prefix)
    summary.tables = tables

    def ignored(key: str) -> None:
        summary.ignored_keys.append(key)
        logger.warning("not an archive object; ignored", key=f"s3://{opts.bucket}/{key}")

    since = opts.since
    if opts.rebuild:  # from the latest snapshot at or before the range, other snapshots left out
        base = snapshot.rebuild_base(s3, opts.bucket, opts.prefix, tables, since=opts.since, until=opts.until)
        if base is not None:
            since, summary.snapshot, summary.since = base.taken, base.stream, _iso(base.taken)
    listed = archive.list_objects(s3, opts.bucket, opts.prefix, tables, since=since, until=opts.until, ignored=ignored)
    if opts.rebuild:
        listed = [
            o for o in listed if not snapshot.is_snapshot_stream(o.name.stream) or o.name.stream == summary.snapshot
        ]
    summary.objects["listed"] = len(listed)
    state, resumed = State.open(None if opts.dry_run else opts.state, opts.identity(), opts.resume, logger)
    summary.resumed, summary.state = resumed, str(opts.state) if state.path else None

    if opts.dry_run:
        pipeline = None
    elif pipeline is None:
        pipeline = _build_pipeline(cfg, opts, state, resumed)
    state.save()

    todo = [o for o in listed if state.objects.get(o.key) != o.etag]
    summary.objects["skipped"] = len(listed) - len(todo)
    groups = archive.plan(todo)
    summary.shards = len(groups)
    order = [o for _, objs in groups for o in objs]
    progress = Progress(err or sys.stderr, sum(o.size for o in order), len(order), clock=clock, log=logger)
    loader = archive.Prefetcher(order, lambda o: archive.read_object(s3, opts.bucket, o), opts.prefetch)
    merge_stats = archive.MergeStats()
    pending = 0
    last_fed: dict[str, str] = {}
    finished: dict[str, str] = {}
    records = summary.records

    def flush() -> None:
        nonlocal pending
        if pipeline is not None:
            pipeline.flush()
            state.streams.update(last_fed)
            state.objects.update(finished)
            state.save()
        last_fed.clear()
        finished.clear()
        pending = 0

    try:
        for (table, stream), objs in groups:
            sid = f"{table}/{stream}"
            done = int(state.streams[sid]) if sid in state.streams else -1
            for ev in archive.merge(objs, loader.get, merge_stats):
                if isinstance(ev, StreamRecord):
                    if not since <= ev.created_at < opts.until:
                        records["outside_range"] += 1
                    elif ev.sequence <= done:
                        records["already_done"] += 1
                    else:
                        records["replayed"] += 1
                        if not records["replayed"] % 1000:
                            progress.update(records["replayed"], summary.bytes_read, summary.objects["read"])
                        if pipeline is not None:
                            pipeline.add_record(ev)
                            last_fed[sid] = ev.sequence_number
                            pending += 1
                            if pending >= cfg.pipeline.max_batch_records:
                                flush()
                elif isinstance(ev, RecordError):
                    records["undecodable"] += 1
                    progress.clear()
                    _park(pipeline, ev, logger)
                    summary.parked += 1
                elif isinstance(ev, archive.Opened):
                    summary.objects["read"] += 1
                    records["read"] += len(ev.loaded.entries)
                    summary.bytes_read += ev.loaded.obj.size
                    for e in ev.loaded.errors:
                        progress.clear()
                        _park(pipeline, e, logger)
                        summary.parked += 1
                    progress.update(records["replayed"], summary.bytes_read, summary.objects["read"])
                else:
                    finished[ev.obj.key] = ev.etag
        flush()
    except StopProcessing:
        progress.clear()
        logger.error("replay stopped; everything flushed so far is in the progress file", state=summary.state)
        logger.error(opts.resume_hint())
        raise
    finally:
        loader.close()
        records["duplicates"] = merge_stats.duplicates
        summary.misplaced = merge_stats.misplaced
        progress.finish(records["replayed"], summary.bytes_read, summary.objects["read"])
        if pipeline is not None:
            pipeline.close()
    state.complete = summary.complete = True
    if pipeline is not None:
        state.save()
    summary.seconds = round(clock() - started, 3)
    return summary


def _park(pipeline: Any, error: Any, logger: Any) -> None:
    """Report a damaged line with its ``s3://bucket/key:line`` and park it (unless a dry run)."""
    if pipeline is None:  # a dry run parks nothing: report only
        logger.error("damaged archive line", where=error.where, error=error.reason, field=error.field, parked=False)
    else:  # logged, counted and parked like any other bad record
        pipeline.park(error)


def _build_pipeline(cfg: Any, opts: Options, state: State, resumed: bool) -> Any:
    from worker.app import build_deadletters, build_pipeline, build_sinks

    if not opts.rebuild:
        return build_pipeline(cfg, only=opts.sinks, provision=opts.provision)
    chosen = [a for a in cfg.aggregates if a.name in opts.rebuild]
    chosen = [dataclasses.replace(a, table=opts.into) if opts.into else a for a in chosen]
    target = dataclasses.replace(cfg, aggregates=chosen)
    tables = sorted({a.table for a in chosen})
    if not (resumed and state.rebuild_checked == tables):
        _require_empty(cfg, tables)
    state.rebuild_checked = tables
    sinks = build_sinks(target, only=["aggregates"], provision=True)
    return build_pipeline(target, sinks=sinks, deadletters=build_deadletters(cfg, provision=opts.provision))


def _require_empty(cfg: Any, tables: list[str]) -> None:
    """Refuse to rebuild into a table that holds anything (a missing one is created)."""
    from worker.aws import client
    from worker.errors import FatalError
    from worker.sources.archive import error_code

    ddb = client(cfg, "dynamodb")
    for table in tables:
        try:
            resp = ddb.scan(TableName=table, Limit=1, ConsistentRead=True)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                continue
            raise FatalError(f"--rebuild: cannot check table {table!r}: {exc}") from exc
        if resp.get("Items"):
            raise FatalError(
                f"--rebuild: table {table!r} is not empty; rebuild into an empty table "
                f"(--into NEW_TABLE) or empty {table!r} first"
            )
