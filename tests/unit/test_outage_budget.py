"""One failure budget, in time, verified on a simulated clock (sleeping advances it; no real waits)."""

from __future__ import annotations

import random

import pytest

from tests.simclock import SimClock
from worker.errors import FatalError, RetryableError
from worker.pipeline import Pipeline, StopProcessing
from worker.records import RawRecord
from worker.retry import DEFAULT_MAX_OUTAGE_SECONDS, RetryPolicy
from worker.testing import MemoryDeadLetters, MemorySink


def policy(clock: SimClock, **kw) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, rng=random.Random(7), **kw)


def outage(clock: SimClock, until: float, *, hang: float = 0.0, retry_after: float | None = None):
    """A call failing (after hanging ``hang`` s) until the simulated clock reaches ``until``."""
    calls = []

    def call() -> str:
        calls.append(clock.now)
        clock.now += hang
        if clock.now < until:
            raise RetryableError("down", retry_after=retry_after)
        return "ok"

    return call, calls


def test_the_default_budget_is_about_fifteen_minutes() -> None:
    assert DEFAULT_MAX_OUTAGE_SECONDS == 900


@pytest.mark.parametrize("minutes", [1, 5, 14])
def test_an_outage_shorter_than_the_budget_is_waited_out(minutes: int) -> None:
    clock = SimClock()
    call, _ = outage(clock, clock.now + minutes * 60)
    assert policy(clock).call(call, "flush") == "ok"
    assert clock.now >= 1000 + minutes * 60
    assert clock.now - 1000 <= minutes * 60 + 20  # recovered within one capped wait of the end
    assert max(clock.sleeps) <= 20  # the backoff cap


@pytest.mark.parametrize("minutes", [16, 60])
def test_an_outage_longer_than_the_budget_stops_when_the_budget_ends(minutes: int) -> None:
    clock = SimClock()
    call, calls = outage(clock, clock.now + minutes * 60)
    with pytest.raises(FatalError, match="max_outage_seconds = 900"):
        policy(clock).call(call, "flush")
    assert clock.now - calls[0] == pytest.approx(900)  # not 8 attempts, not 16 minutes: the budget
    assert len(calls) > 50  # connection refused fails fast: many attempts, same time


def test_a_hung_connection_spends_its_timeouts_inside_the_budget() -> None:
    clock = SimClock()
    call, calls = outage(clock, clock.now + 3600, hang=30.0)  # every call times out after 30 s
    with pytest.raises(FatalError):
        policy(clock).call(call, "flush")
    # The first failure is noticed after one timeout; from then the budget runs, and one
    # more timed-out call may end past it: never 4 tries x 30 s x 8 attempts.
    assert clock.now - calls[0] <= 30 + 900 + 30


def test_a_throttling_storm_honours_retry_after_and_spends_the_budget_at_clock_rate() -> None:
    clock = SimClock()
    call, _ = outage(clock, clock.now + 600, retry_after=7.0)
    assert policy(clock).call(call, "flush") == "ok"  # a 10-minute storm is survived
    assert min(clock.sleeps) >= 7.0
    clock2 = SimClock()
    call2, calls2 = outage(clock2, clock2.now + 3600, retry_after=7.0)
    with pytest.raises(FatalError):
        policy(clock2).call(call2, "flush")
    assert clock2.now - calls2[0] == pytest.approx(900)


def test_a_retry_after_beyond_the_budget_is_cut_to_what_is_left() -> None:
    clock = SimClock()
    call, _ = outage(clock, clock.now + 10_000, retry_after=5000.0)
    with pytest.raises(FatalError):
        policy(clock, max_outage_seconds=60).call(call, "flush")
    assert clock.sleeps == [60.0]


def test_errors_that_are_not_retryable_stop_at_once() -> None:
    clock = SimClock()

    def boom() -> None:
        raise FatalError("table missing")

    with pytest.raises(FatalError, match="table missing"):
        policy(clock).call(boom, "flush")
    assert clock.sleeps == []


def test_the_pipeline_stops_without_acknowledging_after_a_long_outage() -> None:
    clock = SimClock()
    down_until = clock.now + 20 * 60

    def fail(_: int) -> None:
        if clock.now < down_until:
            raise RetryableError("connection refused")

    sink = MemorySink(fail=fail)
    p = Pipeline([sink], MemoryDeadLetters(), retry=policy(clock))
    raw = RawRecord(
        {
            "eventName": "INSERT",
            "dynamodb": {"Keys": {"k": {"S": "a"}}, "NewImage": {"k": {"S": "a"}}, "SequenceNumber": "5"},
        },
        "s/5",
        shard_id="s",
    )
    with pytest.raises(StopProcessing, match="gave up"):
        p.process([raw])
    assert sink.flushed == [] and clock.now - 1000 == pytest.approx(900)
    # A shorter outage: waited out, then the position is acknowledged.
    clock2 = SimClock()

    def five_minutes_down(_: int) -> None:
        if clock2.now < 1300:
            raise RetryableError("down")

    sink2 = MemorySink(fail=five_minutes_down)
    p2 = Pipeline([sink2], MemoryDeadLetters(), retry=policy(clock2))
    assert p2.process([raw]).sequences == {"s": "5"}


@pytest.mark.parametrize("seed", range(20))
def test_the_budget_ends_on_a_clock_whose_steps_are_coarse(seed: int) -> None:
    # At epoch-like magnitudes a float clock cannot advance by a few nanoseconds: the last
    # sliver of the budget must end the retries, not be waited for forever.
    clock = SimClock(start=1.7e9 + seed * 0.37)
    call, calls = outage(clock, float("inf"))
    with pytest.raises(FatalError):
        RetryPolicy(sleep=clock.sleep, clock=clock, rng=random.Random(seed), max_outage_seconds=61.3).call(call, "x")
    assert clock.now - calls[0] == pytest.approx(61.3, abs=0.01)
