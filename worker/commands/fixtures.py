"""``worker fixtures``: record fixtures from a live stream, or convert them between shapes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fixtures", help="record fixtures from a stream, or convert their shape")
    fs = p.add_subparsers(dest="fixtures_command", required=True, metavar="ACTION")

    rec = fs.add_parser("record", help="record every record now in a table's stream (GetRecords, wire JSON)")
    rec.add_argument("--table", required=True, help="source table (its latest stream is read)")
    rec.add_argument("--out", required=True, help="output file (JSON Lines)")
    rec.add_argument("--config", help="configuration file ([aws] endpoints, worker.region)")
    rec.add_argument("--endpoint-url", help="DynamoDB / Streams endpoint (e.g. an emulator)")
    rec.add_argument(
        "--demo",
        action="store_true",
        help="start an embedded emulator, run the example Orders workload on it, and record that",
    )
    rec.set_defaults(run=record)

    conv = fs.add_parser("convert", help="rewrite a fixture file in another record shape")
    conv.add_argument("input", help="fixture file of any shape")
    conv.add_argument("--to", required=True, choices=["wire", "adapter", "multilang", "lambda", "cli"])
    conv.add_argument("--out", required=True, help="output file")
    conv.set_defaults(run=convert)


def record(args: argparse.Namespace) -> int:

    from worker import config
    from worker.aws import client, stream_arn
    from worker.records import to_json
    from worker.sources import poller

    cfg = config.load(args.config) if args.config else config.Config()
    if args.endpoint_url:
        cfg = dataclasses.replace(cfg, aws=dataclasses.replace(cfg.aws, endpoint_url=args.endpoint_url))
    with contextlib.ExitStack() as stack:
        if args.demo:
            from worker import examples
            from worker.emulators import fake_aws_credentials, start_moto

            stack.enter_context(fake_aws_credentials())
            moto = start_moto()
            stack.callback(moto.stop)
            cfg = dataclasses.replace(cfg, aws=dataclasses.replace(cfg.aws, endpoint_url=moto.url))
            examples.create_table(client(cfg, "dynamodb"), args.table)
            import boto3

            resource = boto3.resource(
                "dynamodb", endpoint_url=moto.url, region_name=cfg.worker.region
            )  # the demo writes through the high-level API, as applications do
            examples.run(resource, args.table)
        arn = stream_arn(client(cfg, "dynamodb"), args.table)
        streams = client(cfg, "dynamodbstreams")
        count = 0
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fh:
            for _shard, rec in poller.poll(streams, arn):
                fh.write(to_json(rec) + b"\n")
                count += 1
    print(f"recorded {count} records from {arn} into {out}", file=sys.stderr)
    return 0


def convert(args: argparse.Namespace) -> int:
    from worker import shapes
    from worker.decode import decode
    from worker.sources import fixtures

    canon = [shapes.canonical(decode(raw)) for raw in fixtures.read([args.input])]
    Path(args.out).write_bytes(shapes.dump(canon, args.to))
    print(f"wrote {len(canon)} records as {args.to} to {args.out}", file=sys.stderr)
    return 0
