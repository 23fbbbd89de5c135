"""Logging: one JSON shape for every line in containers, readable lines on a terminal; always stderr.

stdout is reserved: under ``worker kcl`` it carries the KCL multilang protocol,
and ``worker local --json`` prints its report there.

Every line, from structlog, from the standard library or from a library
(botocore, urllib3), goes through one
``structlog.stdlib.ProcessorFormatter`` on one stderr handler, so a container
log holds one JSON object per line with these keys (the shape the launcher's
JVM encoder matches, see the README's *Logs* section):

* ``timestamp``: ISO 8601, UTC, with ``Z`` (``2026-01-01T12:00:00.123456Z``)
* ``level``: ``debug`` | ``info`` | ``warning`` | ``error`` | ``critical``
* ``message``: the event
* ``logger``: the logger's name (``worker.kcl``, ``botocore.credentials``)
* ``shard``, ``sequence``: where known (bound by the shard process)
* any other context as further keys; ``exception``: a formatted traceback, if any.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

KEYS = ("timestamp", "level", "message", "logger")


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _key_order(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The four common keys first, in a fixed order; the context after them."""
    head = {k: event.pop(k) for k in KEYS if k in event}
    return {**head, **event}


def _json_renderer() -> Any:
    import orjson

    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj, default=str).decode()

    return structlog.processors.JSONRenderer(serializer=dumps)


def formatter(use_json: bool, colors: bool = False) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter: structlog's own events and foreign (stdlib) records alike."""
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if use_json:
        final += [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _key_order,
            _json_renderer(),
        ]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=colors))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.ExtraAdder()],
        processors=final,
    )


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library through one handler on ``stream`` (stderr)."""
    out = stream or sys.stderr
    tty = out.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(use_json, colors=tty and fmt != "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and up
    threshold = getattr(logging, level.upper(), logging.INFO)
    logging.getLogger("worker").setLevel(threshold)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
