"""structlog set-up: JSON in containers, readable on a terminal, always to stderr.

stdout is reserved: under ``worker kcl`` it carries the KCL multilang protocol,
and ``worker local --json`` prints its report there.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (botocore, urllib3) log through the standard library: to stderr too.
    logging.basicConfig(stream=out, level=logging.WARNING, force=True)
