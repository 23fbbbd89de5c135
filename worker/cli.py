"""``worker`` command line: one sub-command per module in :mod:`worker.commands`.

Each command module exposes ``add_parser(subparsers)`` (through
:func:`worker.commands.add_parser`: plain-text help, ``--config``) and
``run(args) -> int``, and keeps heavy imports inside ``run`` so that start-up
stays fast (one shard process per KCL lease starts through here).

Exit codes: 0 ok; 1 a failure at run time (a probe failed, processing stopped);
2 a usage or configuration error (named, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from worker import version

# modules under worker.commands, in the order of `worker --help`
COMMANDS = [
    "local",
    "check_config",
    "daemon",
    "checkpoints",
    "replay",
    "fixtures",
    "kcl",
    "backfill",
]

DESCRIPTION = """\
worker: a DynamoDB table's change stream (NEW_AND_OLD_IMAGES) into derived data:
aggregate tables in DynamoDB, an OpenSearch index and an S3 archive, with an
exactly-once effect. In production it runs under KCL 3 (`worker daemon`).

configuration: --config FILE (before or after the command), else $WORKER_CONFIG,
else none; WORKER__SECTION__KEY variables override every key."""

EPILOG = """\
examples:
  worker local --config config/local.toml      run the bundled fixtures on emulators
  worker check-config --config worker.toml --probe
  worker --config worker.toml checkpoints show
  worker replay --since 24h --sinks search

`worker COMMAND --help` describes each command. Exit codes: 0 ok, 1 failed,
2 usage or configuration error, 130 interrupted."""


def parser() -> argparse.ArgumentParser:
    from worker.commands import add_config_option

    p = argparse.ArgumentParser(
        prog="worker", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"worker {version()}")
    add_config_option(p)
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure (default: one line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"worker.commands.{name}")
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from worker.errors import ConfigError, FatalError

    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except FatalError as exc:
        if args.debug:
            raise
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # unanticipated: still one line (the traceback with --debug)
        if args.debug:
            raise
        print(f"worker: {args.command}: {describe(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def describe(exc: BaseException) -> str:
    """One line for an exception that escaped every classification: its type and message,
    with botocore's missing-credentials error said plainly."""
    from worker.aws import missing_credentials

    if missing_credentials(exc):
        return f"no AWS credentials found ({exc}): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
