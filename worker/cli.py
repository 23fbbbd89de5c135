"""``worker`` command line: one sub-command per module in :mod:`worker.commands`.

Each command module exposes ``add_parser(subparsers)`` (through
:func:`worker.commands.add_parser`: plain-text help, ``--config``) and
``run(args) -> int``, and keeps heavy imports inside ``run`` so that start-up
stays fast (one shard process per KCL lease starts through here). For the same
reason, when the command line names a command, only that command's module is
imported and only its parser built (:func:`command_of`), and ``--version``
reads the installed version only when asked.

Exit codes: 0 ok; 1 a failure at run time (a probe failed, processing stopped);
2 a usage or configuration error (named, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

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


class _Version(argparse.Action):
    """``--version``: prints ``worker <version>`` and exits; the version is looked up only then
    (reading the installed distribution's metadata imports more than a shard process needs)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        parser._print_message(f"worker {version()}\n", sys.stdout)
        parser.exit()


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command, or only ``command`` (a module name in :data:`COMMANDS`)."""
    from worker.commands import add_config_option

    p = argparse.ArgumentParser(
        prog="worker", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action=_Version, help="show the version and exit")
    add_config_option(p)
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure (default: one line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if command is None else [command]:
        module = importlib.import_module(f"worker.commands.{name}")
        module.add_parser(sub)
    return p


def command_of(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names, read as the top-level parser reads it: the first
    argument that is neither an option nor ``--config``'s value. None when it names no known command
    (or anything unusual comes first): then the full parser reads it, and reports any error."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return None
        if arg.startswith("-"):
            # --config FILE (argparse also takes an unambiguous prefix: --conf FILE)
            if "=" not in arg and len(arg) > 3 and "--config".startswith(arg):
                next(args, None)
            continue
        name = arg.replace("-", "_")
        return name if name in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(command_of(argv)).parse_args(argv)
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
