"""Retry with capped exponential backoff and full jitter, within one failure budget in time.

Clock, sleep and randomness are injected: tests run a multi-minute outage on a
simulated clock in microseconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from worker.errors import Action, FatalError, action_of

T = TypeVar("T")

DEFAULT_MAX_OUTAGE_SECONDS = 900.0  # 15 minutes: a sink outage longer than that stops the worker
MIN_WAIT = 0.001  # less budget than this left counts as none (a float clock may not advance by less)


@dataclass
class RetryPolicy:
    """Retries only errors whose action is RETRY; anything else propagates at once.

    The budget is **time**: a call keeps being retried while less than
    ``max_outage_seconds`` have passed since its first failure, then the last
    error is wrapped in a :class:`FatalError` (action STOP): a worker that cannot
    make progress must not acknowledge. ``attempts`` (0: no limit) is an extra
    bound by count, for tests and tools. The wait before attempt ``n`` is
    uniform in ``[0, min(cap, base * 2^n)]``; a server's ``retry_after`` hint
    (HTTP ``Retry-After``, throttling) is a lower bound on it. Waits never go
    past the budget: the last attempt is made when the budget ends, so a
    throttling storm or an outage spends it at the rate of the clock, never
    faster (a fast-failing endpoint gets more attempts, not less time).
    """

    attempts: int = 0
    base: float = 0.1
    cap: float = 20.0
    max_outage_seconds: float = DEFAULT_MAX_OUTAGE_SECONDS
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    on_retry: Callable[[str, int, BaseException, float], None] | None = None

    def delay(self, attempt: int, hint: float | None = None) -> float:
        wait = self.rng.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 64))))
        return max(wait, hint or 0.0)

    def call(self, fn: Callable[[], T], what: str) -> T:
        started: float | None = None
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if action_of(exc) is not Action.RETRY:
                    raise
                now = self.clock()
                if started is None:
                    started = now
                attempt += 1
                spent = now - started
                left = self.max_outage_seconds - spent
                if left < MIN_WAIT or (self.attempts and attempt >= self.attempts):
                    raise FatalError(
                        f"{what}: gave up after {attempt} attempts over {spent:.0f} s"
                        f" (pipeline.max_outage_seconds = {self.max_outage_seconds:g}): {exc}"
                    ) from exc
                wait = min(self.delay(attempt - 1, getattr(exc, "retry_after", None)), left)
                if self.on_retry:
                    self.on_retry(what, attempt, exc, wait)
                self.sleep(wait)


def no_sleep(_: Any) -> None:
    """A sleep that does not (tests)."""
