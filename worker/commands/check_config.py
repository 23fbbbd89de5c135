"""``worker check-config FILE``: validate a configuration file (and the environment)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", help="TOML configuration file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from worker import config
    from worker.sinks import registry

    cfg = config.load(args.file)
    sinks = ", ".join(registry.configured(cfg)) or "none"
    print(f"{args.file}: ok (sinks: {sinks}; dead letters: {cfg.deadletter.url})", file=sys.stdout)
    return 0
