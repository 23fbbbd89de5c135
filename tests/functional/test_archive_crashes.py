"""Randomized crash schedules against moto S3: after any crash and restart, every record
is archived exactly once (after duplicates are removed) and nothing checkpointed is ever lost.

A crash is a ``BaseException`` nothing in the worker catches (a kill): raised before a PUT,
after a PUT succeeded (its answer lost), or after a flush but before the checkpoint. The
restarted process resumes each shard from its last checkpoint with other batch sizes and
other rotation settings. Sometimes the dead process lives on as a zombie that flushes one
more, older batch after the new owner started (a lease lost without knowing it).

Failures are budgeted in time on a simulated clock (:class:`tests.simclock.SimClock`: the
retry policy's clock and sleep, the sink's and the pipeline's clock): outages of 1 to 14
minutes are waited out, longer ones stop the worker without a checkpoint (a restart follows);
a hung call spends the 30 s read timeout, before or after its PUT reached S3.
"""

from __future__ import annotations

import os
import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from tests.functional.archive_helpers import CHILD, OTHER, PARENT, T0, FlakyS3, make_cfg, s3_client, seq_of, stream
from tests.simclock import SimClock
from worker import archive
from worker.decode import decode
from worker.pipeline import Pipeline, StopProcessing
from worker.retry import RetryPolicy
from worker.shapes import canonical
from worker.sinks import archive as sink_mod
from worker.testing import MemoryDeadLetters


class Crash(BaseException):
    """The process dies here."""


SMALL_SCHEDULES = int(os.environ.get("ARCHIVE_SCHEDULES", "1000"))
CHUNKS = 8
SLOW_DOWN = ("SlowDown", 503)
READ_TIMEOUT = 30.0  # what a hung call costs on the simulated clock (the client's read timeout)
# Fault kinds of the small schedules, each counted where it struck (a generator that stops
# producing one fails test_many_small_schedules...).
FAULTS = ("retryable", "storms", "conflicts", "outages", "long outages", "outage calls", "budget stops", "hung")


def s3_error(op: str, code: str, status: int, retry_after: str | None = None) -> ClientError:
    headers = {"retry-after": retry_after} if retry_after else {}
    meta = {"HTTPStatusCode": status, "HTTPHeaders": headers}
    return ClientError({"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": meta}, op)


def streams(rng: random.Random, small: bool = False):
    n = rng.randint(6, 20) if small else rng.randint(60, 140)
    return {
        # The parent spans an hour boundary (two partitions); the child continues it.
        PARENT: stream(n, shard=PARENT, start=T0 + 3600 - n // 2, seed=rng.random()),
        OTHER: stream(n // 2, shard=OTHER, first_seq=48_000_000_000_000_000_000_000, seed=rng.random()),
        CHILD: stream(
            n // 2, shard=CHILD, first_seq=50_000_000_000_000_000_000_000, start=T0 + 3600 + n, seed=rng.random()
        ),
    }


def check_durable(url, data, checkpoint, bucket="archive"):
    """Everything before each shard's checkpoint is in the archive (the checkpoint rule)."""
    _, got, errors = archive.read_all(s3_client(url), bucket, "changes/")
    assert not errors
    have = {(r.shard_id, r.sequence) for r in got}
    for shard, upto in checkpoint.items():
        for raw in data[shard][:upto]:
            assert (shard, seq_of(raw)) in have, f"checkpointed {raw.where} is not archived"


def run_schedule(url: str, seed: int, *, bucket: str = "archive", small: bool = False) -> dict[str, int]:
    """One schedule; ``small`` ones (6-20 records a shard) also get retryable S3 errors (500,
    connection failures, a 500 after a PUT succeeded), throttling storms (503 SlowDown with
    Retry-After), injected conditional-write conflicts (409), outages of minutes and hung
    calls, on a simulated clock."""
    rng = random.Random(seed)
    data = streams(rng, small)
    checkpoint = dict.fromkeys(data, 0)
    real = s3_client(url)
    real.create_bucket(Bucket=bucket)
    zombie = None
    counts = {"processes": 0, "crashes": 0, "zombie_flushes": 0, **dict.fromkeys(FAULTS, 0)}
    sim = SimClock()
    storm = [0]
    down_until = [0.0]  # an outage: every call fails to connect until this simulated time

    def hang(op: str) -> None:
        counts["hung"] += 1
        sim.advance(READ_TIMEOUT)
        raise ReadTimeoutError(endpoint_url=f"{url}/{bucket}")

    def inject(op: str) -> None:
        if not small:
            return
        if sim() < down_until[0]:
            counts["outage calls"] += 1
            raise EndpointConnectionError(endpoint_url=url)
        if storm[0] > 0:
            storm[0] -= 1
            raise s3_error(op, *SLOW_DOWN, retry_after="2")
        roll = rng.random()
        if roll < 0.03:
            counts["retryable"] += 1
            raise s3_error(op, "InternalError", 500)
        if roll < 0.05:
            counts["retryable"] += 1
            raise EndpointConnectionError(endpoint_url="http://moto")
        if roll < 0.07 and op == "put_object":
            counts["conflicts"] += 1
            raise s3_error(op, "ConditionalRequestConflict", 409)
        if roll < 0.08:
            counts["storms"] += 1
            storm[0] = rng.randint(5, 60)
            raise s3_error(op, *SLOW_DOWN, retry_after="2")
        if roll < 0.09:  # past the 15-minute budget (pipeline.max_outage_seconds) the worker stops
            counts["outages"] += 1
            minutes = rng.uniform(1, 14) if rng.random() < 0.75 else rng.uniform(16, 40)
            counts["long outages"] += minutes > 15
            down_until[0] = sim() + minutes * 60
            raise EndpointConnectionError(endpoint_url=url)
        if roll < 0.10:
            hang(op)  # before the request reached S3

    while any(checkpoint[s] < len(data[s]) for s in data):
        counts["processes"] += 1
        crash_put = rng.choice([None, None, rng.randint(1, 12)])
        crash_after = rng.random() < 0.5

        def hook(op, n, crash_put=crash_put, crash_after=crash_after):
            if op == "put_object" and n == crash_put and not crash_after:
                raise Crash
            inject(op)

        def after(op, n, crash_put=crash_put, crash_after=crash_after):
            if op == "put_object" and n == crash_put and crash_after:
                raise Crash
            if small and op == "put_object":
                roll = rng.random()
                if roll < 0.03:
                    counts["retryable"] += 1
                    raise s3_error(op, "InternalError", 500)  # written, but the answer is lost
                if roll < 0.04:
                    hang(op)  # written; the answer never comes

        cfg = make_cfg(url, bucket=bucket, max_records=rng.choice([4, 13, 50, 10_000]))
        sink = sink_mod.build(cfg, s3=FlakyS3(real, hook, after), clock=sim)
        retry = RetryPolicy(sleep=sim.sleep, clock=sim, rng=random.Random(rng.random()))
        p = Pipeline([sink], MemoryDeadLetters(), retry=retry, clock=sim)
        try:
            # The child only after its parent is done (the KCL's rule); the others interleave.
            order = [PARENT, OTHER] if checkpoint[PARENT] < len(data[PARENT]) else [OTHER, CHILD]
            while any(checkpoint[s] < len(data[s]) for s in order):
                shard = rng.choice([s for s in order if checkpoint[s] < len(data[s])])
                start = checkpoint[shard]
                batch = data[shard][start : start + rng.randint(1, 30)]
                p.process(batch)
                if zombie is not None:  # the old owner flushes its stale view once more
                    zp, zshard, zstart = zombie
                    zp.process(data[zshard][zstart : zstart + rng.randint(1, 30)])
                    counts["zombie_flushes"] += 1
                    zombie = None
                if rng.random() < 0.12:
                    raise Crash  # flushed, not checkpointed
                checkpoint[shard] = start + len(batch)
        except (Crash, StopProcessing) as exc:
            if isinstance(exc, StopProcessing):  # retried for max_outage_seconds in vain: stopped
                if "gave up after" not in str(exc):
                    raise
                counts["budget stops"] += 1
            else:
                counts["crashes"] += 1
            if not small:  # (small ones: the final check finds a lost checkpointed record too,
                check_durable(url, data, checkpoint, bucket)  # as it is never delivered again)
            if rng.random() < 0.3:
                shard = rng.choice(list(data))
                zsink = sink_mod.build(cfg, s3=real)
                zombie = (Pipeline([zsink], MemoryDeadLetters()), shard, checkpoint[shard])

    _, got, errors = archive.read_all(real, bucket, "changes/")
    assert not errors
    by_shard: dict[str, list] = {}
    for r in got:
        by_shard.setdefault(r.shard_id, []).append(r)
    for shard, raws in data.items():
        # Exactly once after dedupe, in order, each exactly as delivered.
        assert [r.sequence for r in by_shard[shard]] == [seq_of(r) for r in raws], shard
        for r, raw in zip(by_shard[shard], raws, strict=True):
            assert canonical(r) == canonical(decode(raw))
    return counts


@pytest.mark.parametrize("seed", range(6))
def test_crash_schedules_archive_every_record_exactly_once(moto_url, seed):
    counts = run_schedule(moto_url, seed)
    assert counts["processes"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 30))
def test_more_crash_schedules(moto_url, seed):
    run_schedule(moto_url, seed)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_many_small_schedules_with_s3_errors_storms_and_conflicts(moto_url, chunk):
    totals: dict[str, int] = {}
    seeds = range(1000 + chunk, 1000 + SMALL_SCHEDULES, CHUNKS)
    for seed in seeds:
        try:
            counts = run_schedule(moto_url, seed, bucket=f"arch-{seed}", small=True)
        except AssertionError as exc:
            raise AssertionError(f"archive schedule seed {seed}: {exc}") from exc
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    print(f"archive schedules {len(seeds)} (chunk {chunk}): {dict(sorted(totals.items()))}")
    if len(seeds) >= 100:  # the generator exercised every fault it claims to
        assert all(totals[k] > 0 for k in ("processes", "crashes", "zombie_flushes", *FAULTS)), totals


def test_the_schedules_do_crash_and_meet_zombies(moto_url):
    # The generator itself must exercise what it claims to (else the tests above prove little).
    totals = {"processes": 0, "crashes": 0, "zombie_flushes": 0}
    for seed in (101, 102, 103):
        moto_reset(moto_url)
        for k, v in run_schedule(moto_url, seed).items():
            totals[k] = totals.get(k, 0) + v
    assert totals["crashes"] >= 3 and totals["zombie_flushes"] >= 1


def moto_reset(url):
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")).close()
