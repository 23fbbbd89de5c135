"""``worker`` command line: one sub-command per module in :mod:`worker.commands`.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``
and keeps heavy imports inside ``run`` so that start-up stays fast (one shard
process per KCL lease starts through here).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name in the registry -> module under worker.commands
COMMANDS = [
    "local",
    "check_config",
    "fixtures",
    "kcl",
    "daemon",
    "checkpoints",
    "replay",
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worker", description=__doc__.splitlines()[0])
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
