"""A simulated monotonic clock for retry budgets: sleeping advances it, nothing waits."""

from __future__ import annotations

import threading


class SimClock:
    """Simulated seconds; ``sleep`` and :meth:`advance` move it (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        """Time spent inside a call (a hung connection until its read timeout)."""
        with self._lock:
            self.now += seconds
