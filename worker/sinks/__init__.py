"""The seam between the pipeline and every sink.

A sink sees every :class:`~worker.diff.Change` (no-ops and TTL expirations
included) and decides what it means for its target. The contract:

``add(change)``
    Buffer the change. No network I/O (so a crash here loses nothing that was
    acknowledged). Raise :class:`~worker.errors.RecordError` to park this one
    record; the rest of the batch continues.

``flush()``
    Make everything added since the last successful flush durable, or raise.
    Writes must be idempotent: after a crash the same changes arrive again,
    possibly with other batch boundaries, and must not be applied twice.
    Returns the records the sink durably refused (each a ``RecordError`` with
    the record as payload): the pipeline parks them before it checkpoints.
    Raise :class:`~worker.errors.RetryableError` for transient failures: the
    buffer must be kept so the pipeline can call ``flush()`` again.
    Anything else stops the worker without a checkpoint.

A sink flushed by size or age (aggregates, search) implements only these: the
pipeline calls ``flush()`` when ``[pipeline] max_batch_records`` records or
``flush_interval`` seconds have accumulated for it. A sink with a cadence of
its own (the archive: one write per object, at rotation) also implements
:class:`Cadenced`.

``close()``
    Release resources. Unflushed changes are dropped (on lease loss this is
    exactly what is wanted: the next owner replays them from the checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from worker.diff import Change
from worker.errors import RecordError

__all__ = ["Cadenced", "DeadLetters", "Reporting", "Sink"]


@runtime_checkable
class Sink(Protocol):
    name: str

    def add(self, change: Change) -> None: ...

    def flush(self) -> Sequence[RecordError]: ...

    def close(self) -> None: ...


@runtime_checkable
class Cadenced(Protocol):
    """A sink that decides when to write, and may keep its newest records unflushed.

    ``due(now)``: whether :meth:`flush_ready` has something to write.
    ``flush_ready()``: write what the sink's cadence makes ready (e.g. rotated
    objects); same error contract as ``flush()``. ``unflushed()``: how many of
    the most recent ``add`` calls (counted from the moment ``add`` is entered)
    are not durable yet; every earlier one is. ``flush()`` still makes
    everything durable (shutdown, shard end).
    """

    def due(self, now: float) -> bool: ...

    def flush_ready(self) -> Sequence[RecordError]: ...

    def unflushed(self) -> int: ...


@runtime_checkable
class Reporting(Protocol):
    """A sink that can describe its target's state for ``worker local``'s report."""

    def report(self) -> Any: ...


class DeadLetters(Protocol):
    """Where parked records go. ``flush`` makes them durable before any checkpoint."""

    def park(self, error: RecordError) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
