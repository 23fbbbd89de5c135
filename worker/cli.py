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
    "backfill",
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worker", description=__doc__.splitlines()[0])
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
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
