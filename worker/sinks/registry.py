"""The sink registry: one entry per sink module, imported only when needed (like the command list).

Each module named in :data:`SINKS` (under :mod:`worker.sinks`) declares, as
module attributes (see :class:`SinkModule`):

``NAME``
    The sink's name (configuration, ``--sinks``, reports, dead letters).
``REPLAY_DEFAULT``
    Whether ``worker replay`` feeds it when ``--sinks`` is not given.
``EMULATORS``
    What ``worker local`` must start when no endpoint is configured:
    ``"aws"`` (moto) and/or ``"opensearch"`` (osmem-server).
``enabled(cfg)``
    Whether the configuration asks for this sink.
``create(cfg, *, provision)``
    The sink, built from the configuration; ``provision=True`` (local runs,
    tests) creates missing tables, buckets and indexes.
``render(report)``
    The lines ``worker local`` prints for the sink's ``report()``.

The order of :data:`SINKS` is the order sinks are built and flushed in.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol, cast

from worker.errors import ConfigError

if TYPE_CHECKING:
    from worker.config import Config
    from worker.sinks import Sink

__all__ = ["SINKS", "SinkModule", "build", "configured", "emulators", "module", "replay_defaults"]

# name -> module under worker.sinks
SINKS = [
    "aggregates",
    "search",
    "archive",
]


class SinkModule(Protocol):
    """What every module in :data:`SINKS` declares."""

    NAME: str
    REPLAY_DEFAULT: bool
    EMULATORS: frozenset[str]

    def enabled(self, cfg: Config) -> bool: ...

    def create(self, cfg: Config, *, provision: bool = False) -> Sink: ...

    def render(self, report: Any) -> list[str]: ...


def module(name: str) -> SinkModule:
    """The module of sink ``name`` (imported on first use)."""
    if name not in SINKS:
        raise ConfigError("--sinks", f"no sink named {name!r} (known: {', '.join(SINKS)})")
    return cast("SinkModule", importlib.import_module(f"worker.sinks.{name}"))


def configured(cfg: Config) -> list[str]:
    """The names of the sinks the configuration enables, in registry order."""
    return [name for name in SINKS if module(name).enabled(cfg)]


def replay_defaults(cfg: Config) -> list[str]:
    """The configured sinks ``worker replay`` feeds by default."""
    return [name for name in configured(cfg) if module(name).REPLAY_DEFAULT]


def emulators(cfg: Config) -> set[str]:
    """The emulators the configured sinks need (``worker local``)."""
    return {e for name in configured(cfg) for e in module(name).EMULATORS}


def build(cfg: Config, *, only: Collection[str] | None = None, provision: bool = False) -> list[Sink]:
    """The configured sinks (optionally only those named), in registry order."""
    available = configured(cfg)
    if only is not None:
        for name in only:
            if name not in available:
                known = ", ".join(available) or "none"
                raise ConfigError("--sinks", f"{name!r} is not configured (configured: {known})")
    return [module(n).create(cfg, provision=provision) for n in available if only is None or n in only]
