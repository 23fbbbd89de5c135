"""``worker backfill``: bring the items that predate the stream into every configured sink.

    worker backfill [--config FILE] [--segments N] [--rate RCU] [--consistent]
                    [--resume] [--dry-run] [--json]

The snapshot, its position and why it is exact against live writes:
:mod:`worker.sources.backfill`. Run it while the live consumer runs (or before
it starts) from the stream's beginning (``kcl.initial_position = TRIM_HORIZON``),
within 24 hours of enabling the stream.

Progress goes to stderr (a bar with an ETA on a terminal, a JSON line every
10 s otherwise); the summary to stdout (``--json``: one JSON object). The
state lives in ``<worker.data_dir>/backfill/``: ``--resume`` continues an
interrupted run per segment; a finished run, run again, does nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, TextIO


def add_parser(sub: Any) -> None:
    from worker.commands import add_parser as add

    p = add(
        sub,
        "backfill",
        "scan the source table into every sink, exactly once against live writes",
        "Bring the items that predate the stream into every configured sink: a parallel scan of\n"
        "[worker] table, taken as the state at the stream's beginning (the old image of each key's\n"
        "first stream record wins over the scanned item), applied through the same pipeline while\n"
        "the live consumer applies every change after it. Resumable per segment; a finished\n"
        "backfill run again does nothing.",
        "  worker backfill --config worker.toml --segments 8 --rate 500\n"
        "  worker backfill --dry-run                   (estimate only)\n"
        "  worker backfill --resume                    (continue an interrupted run)",
    )
    p.add_argument("--segments", type=int, default=4, metavar="N", help="parallel scan segments (default 4)")
    p.add_argument("--rate", type=float, default=0.0, metavar="RCU", help="read capacity units per second (0: any)")
    p.add_argument("--page-items", type=int, default=500, metavar="N", help="items per Scan call (default 500)")
    p.add_argument("--consistent", action="store_true", help="strongly consistent scan reads (twice the capacity)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted backfill of this stream")
    p.add_argument("--dry-run", action="store_true", help="check and estimate only; read and write nothing else")
    p.add_argument("--state-dir", metavar="DIR", help="where progress is kept (default: <worker.data_dir>/backfill)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from worker.commands import load_config
    from worker.errors import ConfigError

    cfg = load_config(args, runtime=True)
    if args.segments < 1:
        raise ConfigError("--segments", "must be at least 1")
    if args.rate < 0:
        raise ConfigError("--rate", "must be >= 0")
    if args.page_items < 1:
        raise ConfigError("--page-items", "must be at least 1")
    if cfg.kcl.initial_position != "TRIM_HORIZON":
        raise ConfigError(
            "kcl.initial_position", "must be TRIM_HORIZON: the backfill supplies the state at the stream's beginning"
        )
    from worker.sources.backfill import ScanOptions

    options = ScanOptions(
        segments=args.segments, page_items=args.page_items, consistent=args.consistent, rate=args.rate
    )
    state_dir = Path(args.state_dir) if args.state_dir else Path(cfg.worker.data_dir) / "backfill"
    summary = execute(cfg, options, state_dir, resume=args.resume, dry_run=args.dry_run, out=sys.stderr)
    if args.json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_SORT_KEYS) + b"\n")
    else:
        sys.stdout.write("".join(f"{k}: {v}\n" for k, v in summary.items()))
    return 0


def execute(
    cfg: Any,
    options: Any,
    state_dir: Any,
    *,
    resume: bool = False,
    dry_run: bool = False,
    out: TextIO | None = None,
    pipeline: Any = None,
    provision: bool = False,
) -> dict[str, Any]:
    """Run one backfill (also used by ``worker local``); returns the summary."""
    from worker.app import build_pipeline
    from worker.aws import client
    from worker.sources.backfill import Backfill

    backfill = Backfill(client(cfg, "dynamodb"), client(cfg, "dynamodbstreams"), cfg.worker.table, state_dir, options)
    if dry_run:
        return backfill.dry_run()
    started = time.monotonic()
    progress = backfill.start(resume=resume)
    if progress.complete:
        return {"table": cfg.worker.table, "complete": True, "already_done": True, **_totals(progress, 0.0)}
    bar = ProgressReport(out or sys.stderr, backfill.estimate)
    pipeline = pipeline or build_pipeline(cfg, provision=provision)
    try:
        backfill.run(pipeline, bar.update)
    finally:
        bar.close()
        pipeline.close()
    seconds = time.monotonic() - started
    assert backfill.workdir is not None
    return {
        "table": cfg.worker.table,
        "complete": progress.complete,
        "snapshot": backfill.snapshot.shard if backfill.snapshot else None,
        "state": str(backfill.workdir.path),
        "deadletters": pipeline.stats.deadletters,
        **_totals(progress, seconds),
    }


def _totals(progress: Any, seconds: float) -> dict[str, Any]:
    return {
        "scanned": progress.scanned,
        "changed_during_scan": progress.changed,
        "snapshot_records": progress.extra.get("snapshot_records", 0),
        "consumed_rcu": round(progress.consumed_rcu, 1),
        "seconds": round(seconds, 2),
        "items_per_second": round(progress.scanned / seconds, 1) if seconds > 0 else None,
    }


class ProgressReport:
    """Items scanned against the table's (approximate) item count: a redrawn bar with an ETA on a
    terminal, otherwise one JSON line every ``every`` seconds."""

    def __init__(self, out: TextIO, estimate: int, every: float = 10.0, clock: Any = time.monotonic) -> None:
        self.out, self.estimate, self.every, self.clock = out, max(estimate, 0), every, clock
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.started = self.last = clock()
        self.lock = threading.Lock()  # scan segments report from their threads

    def update(self, progress: Any) -> None:
        with self.lock:
            self._update(progress)

    def _update(self, progress: Any) -> None:
        now = self.clock()
        if not self.tty and now - self.last < self.every and not progress.complete:
            return
        self.last = now
        done = progress.scanned
        rate = done / (now - self.started) if now > self.started else 0.0
        total = max(self.estimate, done)
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        phase = "done" if progress.complete else "applying" if progress.index_closed else "scanning"
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            self.out.write(
                f"\r{phase:<9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} items "
                f"{rate:,.0f}/s ETA {int(eta) // 60:d}:{int(eta) % 60:02d} RCU {progress.consumed_rcu:,.0f}  "
            )
        else:
            import orjson

            line = {
                "event": "backfill progress",
                "phase": phase,
                "scanned": done,
                "estimate": total,
                "items_per_second": round(rate, 1),
                "eta_seconds": round(eta),
                "consumed_rcu": round(progress.consumed_rcu, 1),
                "applied": progress.applied,
            }
            self.out.write(orjson.dumps(line).decode() + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()
