"""Retry with capped exponential backoff and full jitter; clock and randomness injected."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from worker.errors import Action, FatalError, action_of

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """Retries only errors whose action is RETRY; anything else propagates at once.

    After ``attempts`` tries the last error is wrapped in a :class:`FatalError`
    (action STOP): a worker that cannot make progress must not acknowledge.
    A server's ``retry_after`` hint is honoured as a lower bound on the wait.
    """

    attempts: int = 8
    base: float = 0.1
    cap: float = 20.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    on_retry: Callable[[str, int, BaseException, float], None] | None = None

    def delay(self, attempt: int, hint: float | None = None) -> float:
        wait = self.rng.uniform(0, min(self.cap, self.base * (2**attempt)))
        return max(wait, hint or 0.0)

    def call(self, fn: Callable[[], T], what: str) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:
                if action_of(exc) is not Action.RETRY:
                    raise
                if attempt + 1 >= self.attempts:
                    raise FatalError(f"{what}: gave up after {self.attempts} attempts: {exc}") from exc
                wait = self.delay(attempt, getattr(exc, "retry_after", None))
                if self.on_retry:
                    self.on_retry(what, attempt + 1, exc, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")


def no_sleep(_: Any) -> None:
    """A sleep that does not (tests)."""
