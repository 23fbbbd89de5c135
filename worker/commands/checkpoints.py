"""``worker checkpoints show|reset``: the KCL lease table's checkpoints (see :mod:`worker.leases`).

worker checkpoints show [--json] [--no-lag]
worker checkpoints reset --to trim-horizon|latest|SEQUENCE [--shard ID ...] [--force] [--wait SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    from worker.leases import DEFAULT_WAIT_SECONDS

    p = sub.add_parser("checkpoints", help="list or reset the stream checkpoints in the KCL lease table")
    p.add_argument(
        "--config",
        default=os.environ.get("WORKER_CONFIG") or None,
        help="configuration file (TOML; default $WORKER_CONFIG)",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="shard, owner, checkpoint and lag of every lease")
    show.add_argument("--json", action="store_true", help="one JSON object per lease on stdout")
    show.add_argument("--no-lag", action="store_true", help="skip reading the stream to compute the lag")
    reset = actions.add_parser("reset", help="rewrite checkpoints (to replay, or to skip ahead)")
    reset.add_argument("--to", required=True, help="trim-horizon, latest, or a sequence number (with one --shard)")
    reset.add_argument("--shard", action="append", metavar="ID", help="only this shard (repeatable; default: all)")
    reset.add_argument("--force", action="store_true", help="rewrite even leases held by running workers")
    reset.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help=f"seconds to watch lease counters for live owners (default {DEFAULT_WAIT_SECONDS:g})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from worker import config, leases, log
    from worker.aws import client

    cfg = config.load(args.config)
    log.configure(cfg.worker.log_format, cfg.worker.log_level)
    ddb = client(cfg, "dynamodb")
    table = leases.lease_table(cfg)
    if args.action == "show":
        return _show(cfg, ddb, table, as_json=args.json, with_lag=not args.no_lag)
    results = leases.reset(ddb, table, args.to, shards=args.shard, force=args.force, wait=args.wait)
    for r in results:
        forced = "  (was held: forced)" if r.forced else ""
        print(f"{r.shard}: {r.before or '-'} -> {r.after}{forced}")
    print(f"{len(results)} checkpoint(s) reset in {table}; workers resume after the new checkpoints")
    return 0


def _show(cfg: Any, ddb: Any, table: str, *, as_json: bool, with_lag: bool) -> int:
    import datetime as dt

    import orjson

    from worker import leases
    from worker.aws import client
    from worker.runtime.properties import resolve_stream_arn

    held = leases.read_leases(ddb, table)
    lags: dict[str, leases.Lag] = {}
    if with_lag and held:
        arn = resolve_stream_arn(cfg)
        streams = client(cfg, "dynamodbstreams")
        now = dt.datetime.now(dt.UTC)
        lags = {lease.shard: leases.lag(streams, arn, lease, now) for lease in held}
    rows = leases.rows(held, lags)
    if as_json:
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        return 0
    header = ("SHARD", "OWNER", "CHECKPOINT", "LAG")
    table_rows = [(r["shard"], r["owner"] or "-", r["checkpoint"] or "-", r["lag"] or "-") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table_rows, strict=False)]
    for line in (header, *table_rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    if not rows:
        print(f"(no leases in {table})")
    return 0
