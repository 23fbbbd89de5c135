"""Test fakes, named as such: in-memory sinks and dead letters for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.diff import Change
from worker.errors import RecordError

__all__ = ["MemoryDeadLetters", "MemorySink"]


@dataclass
class MemorySink:
    """Keeps every flushed change in ``flushed``; ``pending`` holds what is not yet durable.

    ``fail`` is an optional hook called at each flush (raise from it to simulate
    a failing target); ``reject`` picks changes to refuse at add time (parked).
    """

    name: str = "memory"
    pending: list[Change] = field(default_factory=list)
    flushed: list[Change] = field(default_factory=list)
    flushes: int = 0
    fail: Callable[[int], None] | None = None
    reject: Callable[[Change], str | None] | None = None
    closed: bool = False

    def add(self, change: Change) -> None:
        reason = self.reject(change) if self.reject else None
        if reason:
            raise RecordError(reason, sink=self.name)
        self.pending.append(change)

    def flush(self) -> Sequence[RecordError]:
        self.flushes += 1
        if self.fail:
            self.fail(self.flushes)
        self.flushed.extend(self.pending)
        self.pending.clear()
        return ()

    def close(self) -> None:
        self.pending.clear()
        self.closed = True

    def report(self) -> Any:
        return {"changes": len(self.flushed)}


@dataclass
class MemoryDeadLetters:
    """Dead letters kept in a list (``parked`` is durable after ``flush``)."""

    pending: list[RecordError] = field(default_factory=list)
    parked: list[RecordError] = field(default_factory=list)

    def park(self, error: RecordError) -> None:
        self.pending.append(error)

    def flush(self) -> None:
        self.parked.extend(self.pending)
        self.pending.clear()

    def close(self) -> None:
        self.pending.clear()
