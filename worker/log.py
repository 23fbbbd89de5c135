"""Logging: one JSON shape for every line in containers, readable lines on a terminal; always stderr.

stdout is reserved: under ``worker kcl`` it carries the KCL multilang protocol,
and ``worker local --json`` prints its report there.

The worker logs structured events through :func:`get_logger`: an event name
and key-value context (``log.bind(shard=...)``, ``log.info("batch flushed",
records=3)``), carried on the standard library's records. Every line, the
worker's own, the standard library's or a library's (botocore, urllib3), goes
through one :class:`Formatter` on one stderr handler, so a container log holds
one JSON object per line with these keys (the shape the launcher's JVM encoder
matches, see the README's *Logs* section):

* ``timestamp``: ISO 8601, UTC, with ``Z`` (``2026-01-01T12:00:00.123456Z``)
* ``level``: ``debug`` | ``info`` | ``warning`` | ``error`` | ``critical``
* ``message``: the event
* ``logger``: the logger's name (``worker.kcl``, ``botocore.credentials``)
* ``shard``, ``sequence``: where known (bound by the shard process)
* any other context (a library's ``extra=`` fields too) as further keys;
  ``exception``: a formatted traceback, if any.

Before :func:`configure` runs, events go where the standard library sends
unconfigured records: warnings and up to stderr, never stdout.

Why not structlog (the model of this API): ``import structlog`` imports
:mod:`asyncio` with it, about 35 ms of every shard process's start-up (``bench
footprint``), for features the worker does not use.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

_CONTEXT = "worker_context"  # the LogRecord attribute carrying a Logger's key-value context
# A LogRecord's own attributes; anything else on a record came from ``extra=`` (or the context).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_COLORS = {"debug": "\x1b[2m", "info": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[31m", "critical": "\x1b[1;31m"}


class Logger:
    """A standard-library logger with bound key-value context (``bind`` returns a new one).

    ``debug/info/warning/error/critical(event, **context)`` log ``event`` with the bound
    context and ``context``; ``exception`` logs at error level with the current exception.
    ``exc_info=True`` on any of them adds the current exception too.
    """

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: Mapping[str, Any] | None = None) -> None:
        self._logger = logger
        self._context = dict(context or {})

    @property
    def name(self) -> str:
        return self._logger.name

    def bind(self, **context: Any) -> Logger:
        return Logger(self._logger, {**self._context, **context})

    def _log(self, level: int, event: str, context: dict[str, Any], exc_info: Any = None) -> None:
        if self._logger.isEnabledFor(level):
            merged = {**self._context, **context} if self._context else context
            # stacklevel: the record names the caller, not this module.
            self._logger.log(level, event, exc_info=exc_info, extra={_CONTEXT: merged}, stacklevel=3)

    def debug(self, event: str, *, exc_info: Any = None, **context: Any) -> None:
        self._log(logging.DEBUG, event, context, exc_info)

    def info(self, event: str, *, exc_info: Any = None, **context: Any) -> None:
        self._log(logging.INFO, event, context, exc_info)

    def warning(self, event: str, *, exc_info: Any = None, **context: Any) -> None:
        self._log(logging.WARNING, event, context, exc_info)

    def error(self, event: str, *, exc_info: Any = None, **context: Any) -> None:
        self._log(logging.ERROR, event, context, exc_info)

    def critical(self, event: str, *, exc_info: Any = None, **context: Any) -> None:
        self._log(logging.CRITICAL, event, context, exc_info)

    def exception(self, event: str, **context: Any) -> None:
        self._log(logging.ERROR, event, context, True)


def get_logger(name: str, **context: Any) -> Logger:
    """The structured logger ``name`` (a standard-library logger's name), with ``context`` bound."""
    return Logger(logging.getLogger(name), context)


class Formatter(logging.Formatter):
    """The one formatter: the worker's events and foreign (standard-library) records alike,
    as JSON lines (``use_json``) or as readable lines (coloured when ``colors``)."""

    def __init__(self, use_json: bool, colors: bool = False) -> None:
        super().__init__()
        self.use_json = use_json
        self.colors = colors

    def event(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as one event: the four common keys first, then its context and extras."""
        created = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "timestamp": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        fields = record.__dict__
        for key, value in fields.get(_CONTEXT, {}).items():
            out.setdefault(key, value)
        for key, value in fields.items():
            if key not in _STANDARD and key != _CONTEXT:
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out

    def format(self, record: logging.LogRecord) -> str:
        event = self.event(record)
        if self.use_json:
            return orjson.dumps(event, default=str).decode()
        return self._console(event)

    def _console(self, event: dict[str, Any]) -> str:
        level = event.pop("level")
        head = f"{event.pop('timestamp')} [{level:<9}] {event.pop('message'):<30}"
        if self.colors:
            head = f"{_COLORS.get(level, '')}{head}\x1b[0m"
        trace = event.pop("exception", None)
        head += f" [{event.pop('logger')}]"
        pairs = " ".join(f"{k}={v if isinstance(v, str) else repr(v)}" for k, v in event.items())
        line = f"{head} {pairs}" if pairs else head
        return f"{line}\n{trace}" if trace else line


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Route every logger through one handler on ``stream`` (stderr): the worker's loggers at
    ``level``, libraries at warnings and up."""
    out = stream or sys.stderr
    tty = out.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    handler = logging.StreamHandler(out)
    handler.setFormatter(Formatter(use_json, colors=tty and fmt != "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and up
    threshold = getattr(logging, level.upper(), logging.INFO)
    logging.getLogger("worker").setLevel(threshold)
