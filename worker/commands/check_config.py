"""``worker check-config [--print] [--probe]``: validate the configuration (file and environment).

Without options: every key is checked offline (types, names of tables, the
index and buckets, URLs, the region) and one line says what will run.
``--print`` shows the effective configuration, secrets masked. ``--probe``
checks the live resources and permissions with the current credentials (see
:mod:`worker.probe`) and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    from worker.commands import add_parser as add

    p = add(
        sub,
        "check-config",
        "validate the configuration; optionally print it or probe the live resources",
        "Load the configuration (--config FILE or $WORKER_CONFIG, then WORKER__SECTION__KEY\n"
        "variables) and check every key: types, table, bucket and index names, URLs, the region.\n"
        "An error names the key and the file or variable it came from (exit 2).\n"
        "--print shows the effective configuration with secrets masked; --probe checks, with the\n"
        "current credentials, the source table and its stream (NEW_AND_OLD_IMAGES), the aggregate\n"
        "tables, the buckets, the search index and KCL's three tables: one line each (exit 1 if\n"
        "any failed).",
        "  worker check-config --config config/worker.toml\n"
        "  worker check-config --print\n"
        "  AWS_PROFILE=prod worker --config worker.toml check-config --probe",
    )
    p.add_argument("file", nargs="?", help=argparse.SUPPRESS)  # older form: check-config FILE
    p.add_argument("--print", action="store_true", help="print the effective configuration (secrets masked)")
    p.add_argument("--probe", action="store_true", help="check the live resources and permissions")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from worker import config
    from worker.commands import config_path
    from worker.config_docs import dump, masked
    from worker.sinks import registry

    path = args.file or config_path(args)
    cfg = config.load(path)
    config.require_runtime(cfg)
    if args.print:
        sys.stdout.write(dump(cfg))
    sinks = ", ".join(registry.configured(cfg)) or "none"
    print(
        f"{path or '(environment only)'}: ok (table {cfg.worker.table} in {cfg.worker.region}; sinks: {sinks}; "
        f"dead letters: {masked(cfg.deadletter.url)}; lease table: {cfg.kcl.application_name})"
    )
    if not args.probe:
        return 0
    return probe(cfg)


def probe(cfg: Any) -> int:
    from worker import aws, probe

    def search() -> Any:
        from worker.sinks.search.client import connect

        assert cfg.search is not None
        return connect(cfg.search, cfg.worker.region)

    clients: dict[str, Any] = {
        "dynamodb": lambda: aws.client(cfg, "dynamodb"),
        "dynamodbstreams": lambda: aws.client(cfg, "dynamodbstreams"),
        "s3": lambda: aws.client(cfg, "s3"),
    }
    failed = 0
    for check in probe.run(cfg, lambda service: clients[service](), search if cfg.search else None):
        print(check.line(), flush=True)
        failed += not check.ok
    print(f"probe: {'all ok' if not failed else f'{failed} failed'}")
    return 1 if failed else 0
