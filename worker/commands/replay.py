"""``worker replay``: feed a time range of the S3 archive through the pipeline and sinks again.

    worker replay --from-archive s3://bucket/prefix --since T [--until T] [--sinks NAMES]
                  [--table NAME] [--dry-run] [--resume] [--json] [--config FILE]
    worker replay --rebuild AGGREGATES [--into TABLE] [--since T] ...

What it guarantees: see :mod:`worker.sources.replay` (the driver).

Progress goes to stderr (a bar on a terminal, a log line every 10 s
otherwise); the summary to stdout (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from worker.sources.replay import Options, State, Summary

UTC = dt.UTC
_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])(?: ?ago)?$")  # 24h, 24h ago, -24h: before now
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: Any) -> None:
    from worker.commands import add_parser as add

    p = add(
        sub,
        "replay",
        "replay a time range of the S3 archive into the sinks",
        "Feed every archived record of a time range, once and in order per shard, through the\n"
        "same pipeline as live processing: the sinks' idempotence makes a range already applied\n"
        "change nothing. Progress is saved after every flush under worker.data_dir; --resume\n"
        "continues an interrupted run of the same options (relative times included).",
        "  worker replay --since 24h --sinks search\n"
        "  worker replay --since 7d --resume\n"
        "  worker replay --since 2026-01-01 --until 2026-01-02 --dry-run\n"
        "  worker replay --rebuild all --into OrderStatsV2 --since 2000-01-01",
    )
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
    p.add_argument("--state", metavar="FILE", help="progress file (default: <worker.data_dir>/replay/<run id>.json)")
    p.add_argument("--provision", action="store_true", help="create missing tables/indexes of the sinks (emulators)")
    p.add_argument("--prefetch", type=int, default=4, metavar="N", help="objects read ahead in parallel (default: 4)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.set_defaults(run=run)


# -- options ----------------------------------------------------------------------------


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
    from worker.aws import split_s3_url
    from worker.errors import ConfigError
    from worker.sinks import registry
    from worker.sources.replay import Options, iso

    if args.from_archive:
        try:
            bucket, prefix = split_s3_url(args.from_archive)
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
        sinks = tuple(registry.replay_defaults(cfg))
    if args.into and not args.rebuild:
        raise ConfigError("--into", "only with --rebuild")
    if not sinks and not args.dry_run:
        raise ConfigError("--sinks", "no sink to replay into (the archive itself is only fed when named)")
    if args.since is None and not rebuild:
        raise ConfigError("--since", "required (a replay of the whole archive must be asked for: --since 2000-01-01)")
    since = parse_time(args.since, now, "--since") if args.since else dt.datetime(2000, 1, 1, tzinfo=UTC)
    until = parse_time(args.until, now, "--until")
    if since >= until:
        raise ConfigError("--since", f"must be before --until ({iso(since)} >= {iso(until)})")
    if not args.table and not cfg.worker.table:
        raise ConfigError("--table", "not given and worker.table is not set ('*' replays every table)")
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
        since_text=args.since or "",
        until_text=args.until or "",
    )


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


def run(args: argparse.Namespace) -> int:
    import orjson

    from worker.commands import load_config

    cfg = load_config(args)
    opts = options(args, cfg, dt.datetime.now(UTC))
    if opts.state is None:
        opts = dataclasses.replace(opts, state=Path(cfg.worker.data_dir) / "replay" / f"{opts.run_id()}.json")
    if opts.resume:
        opts = saved_range(opts)
    try:
        summary = execute(cfg, opts)
    except KeyboardInterrupt:
        print(f"\nworker replay: interrupted; progress is in {opts.state}; {opts.resume_hint()}", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(summary.as_dict(), option=orjson.OPT_SORT_KEYS) + b"\n")
        sys.stdout.flush()
    else:
        sys.stdout.write(render(summary))
    return 0


def saved_range(opts: Options) -> Options:
    """With ``--resume``: the range the interrupted run resolved (``--since 7d`` means then, not now)."""
    import orjson

    if opts.state is None or not opts.state.exists():
        return opts
    try:
        saved = orjson.loads(opts.state.read_bytes()).get("range") or {}
        since, until = saved["since"], saved["until"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return opts  # State.open reports an unreadable file
    return dataclasses.replace(opts, since=_parse_iso(since), until=_parse_iso(until))


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def render(summary: Summary) -> str:
    """The human-readable summary."""
    r, o = summary.records, summary.objects
    mode = " (dry run)" if summary.dry_run else ""
    verb = "would be replayed" if summary.dry_run else "replayed"
    lines = [
        f"worker replay{mode}: {summary.archive} tables {', '.join(summary.tables) or '(none)'}",
        f"  range: from {summary.since} until {summary.until}",
        f"  objects: {o['listed']} listed, {o['read']} read, {o['skipped']} skipped (done in an earlier run)",
        f"  records: {r['read']} read, {r['duplicates']} duplicates removed,"
        f" {r['outside_range']} outside the range, {r['already_done']} already done, {r['replayed']} {verb}",
        f"  shards: {summary.shards}   bytes read: {summary.bytes_read:,}   took {summary.seconds:.1f} s",
    ]
    if not o["listed"]:
        lines.append("  WARNING: no archive objects in this range: nothing was replayed")
    if summary.rebuild:
        lines.append(f"  rebuilt aggregates: {', '.join(summary.rebuild)}")
    if summary.snapshot:
        lines.append(f"  started from snapshot {summary.snapshot} (records from its position on)")
    lines.append(f"  sinks: {', '.join(summary.sinks) or 'none'}")
    if summary.parked:
        where = "reported only (dry run)" if summary.dry_run else "parked in the dead letters"
        lines.append(f"  DAMAGED: {summary.parked} lines/objects could not be read; {where} (see the log)")
    if summary.ignored_keys:
        lines.append(
            f"  ignored {len(summary.ignored_keys)} keys that are not archive objects, e.g. {summary.ignored_keys[0]}"
        )
    if summary.misplaced:
        lines.append(f"  WARNING: {len(summary.misplaced)} records below their object's first sequence number")
    return "\n".join(lines) + "\n"


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
    from worker.aws import client
    from worker.log import get_logger
    from worker.sources.replay import Replay

    logger = get_logger("worker.replay")
    run = Replay(opts, s3 if s3 is not None else client(cfg, "s3"), log=logger, clock=clock)
    run.list()
    state, resumed = run.open_state()
    if opts.dry_run:
        pipeline = None
    elif pipeline is None:
        pipeline = _build_pipeline(cfg, opts, state, resumed)

    def progress(total_bytes: int, total_objects: int) -> Progress:
        return Progress(err or sys.stderr, total_bytes, total_objects, clock=clock, log=logger)

    return run.run(state, pipeline, progress, max_batch_records=cfg.pipeline.max_batch_records)


def _build_pipeline(cfg: Any, opts: Options, state: State, resumed: bool) -> Any:
    from worker.app import build_deadletters, build_pipeline, build_sinks
    from worker.aws import client
    from worker.sources.replay import rebuild_config, require_empty

    if not opts.rebuild:
        return build_pipeline(cfg, only=opts.sinks, provision=opts.provision)
    target, tables = rebuild_config(cfg, opts.rebuild, opts.into)
    if not (resumed and state.rebuild_checked == tables):
        require_empty(client(cfg, "dynamodb"), tables)
    state.rebuild_checked = tables
    sinks = build_sinks(target, only=["aggregates"], provision=True)
    return build_pipeline(target, sinks=sinks, deadletters=build_deadletters(cfg, provision=opts.provision))
