"""``worker kcl [--config FILE]``: the KCL multilang shard process (started by the KCL daemon).

stdout carries the multilang protocol and nothing else. Before anything can
print, the real stdout is duplicated into a private stream for the protocol,
and file descriptor 1 and ``sys.stdout`` are pointed at stderr: a stray
``print``, a library's warning or a subprocess writing to fd 1 ends up in the
log instead of corrupting the protocol.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO


def add_parser(sub: Any) -> None:
    from worker.commands import add_parser as add

    # No summary: hidden from `worker --help` (an internal command).
    p = add(
        sub,
        "kcl",
        None,
        "The KCL multilang shard process, started by the KCL launcher once per shard lease.\n"
        "Not for use by hand: stdout carries the multilang protocol.",
    )
    p.set_defaults(run=run)


def protocol_stdout() -> TextIO:
    """The protocol stream (the original stdout); fd 1 and ``sys.stdout`` now go to stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def run(args: argparse.Namespace) -> int:
    protocol = protocol_stdout()  # first: nothing may reach the protocol stream but the protocol
    from worker.commands import load_config
    from worker.metrics import ENV_DIR

    cfg = load_config(args)
    from worker.sources.kcl import serve

    metrics_dir = os.environ.get(ENV_DIR) or cfg.kcl.metrics_dir or None
    return serve(cfg, stdin=sys.stdin, stdout=protocol, metrics_dir=metrics_dir)
