"""The pipeline's compact queues against the plain deques they replace (a model)."""

from __future__ import annotations

import random
from collections import deque

import pytest

from worker import positions
from worker.positions import AckLog, AddLog, PositionLog


@pytest.mark.parametrize("seed", range(20))
def test_the_position_log_reports_what_a_deque_of_tuples_reports(seed: int, monkeypatch) -> None:
    monkeypatch.setattr(positions, "_COMPACT", random.Random(seed).choice([1, 3, 50]))  # cut often
    rng = random.Random(seed)
    log, model = PositionLog(), deque()
    ordinal = 0
    for _ in range(2000):
        roll = rng.random()
        if roll < 0.7:
            ordinal += 1
            shard = rng.choice(["shardId-1", "shardId-2", "file.jsonl", "é"])
            position = str(rng.randrange(10**40)) if rng.random() < 0.9 else f"x:{rng.randrange(9)}"
            log.append(ordinal, shard, position)
            model.append((ordinal, shard, position))
        elif roll < 0.98:
            upto = rng.randint(0, ordinal + 1)
            expect: dict[str, str] = {}
            while model and model[0][0] <= upto:
                _, shard, position = model.popleft()
                expect[shard] = position
            got = log.pop_upto(upto)
            assert got == expect and list(got) == list(expect)
        else:
            log.clear()
            model.clear()
        assert len(log) == len(model)


@pytest.mark.parametrize("seed", range(20))
def test_the_add_log_keeps_the_newest_like_a_deque(seed: int, monkeypatch) -> None:
    monkeypatch.setattr(positions, "_COMPACT", random.Random(seed).choice([1, 3, 50]))
    rng = random.Random(seed)
    log, model = AddLog(), deque()
    for ordinal in range(1, 3000):
        roll = rng.random()
        if roll < 0.8:
            at = rng.random() * 1000
            log.append(ordinal, at)
            model.append((ordinal, at))
        elif roll < 0.99:
            keep = rng.randint(0, len(model) + 1)
            newest = None
            while len(model) > keep:
                newest = model.popleft()[0]
            assert log.keep_newest(keep) == newest
        else:
            log.clear()
            model.clear()
        assert len(log) == len(model)
        if model:
            assert log.oldest_time() == model[0][1]


@pytest.mark.parametrize("seed", range(20))
def test_the_ack_log_finds_and_pops_like_a_deque(seed: int, monkeypatch) -> None:
    monkeypatch.setattr(positions, "_COMPACT", random.Random(seed).choice([1, 3, 50]))
    rng = random.Random(seed)
    log, model = AckLog(), deque()
    for n in range(2000):
        roll = rng.random()
        if roll < 0.7:
            entry = (str(10**25 + n), rng.choice([None, 0, 7]), rng.random() * 1e9)
            log.append(*entry)
            model.append(entry)
        elif roll < 0.85:  # the KCL source's checkpoint: drop up to the durable one, take it
            want = rng.choice([e[0] for e in model] + ["not-ours"])
            while model and model[0][0] != want:
                model.popleft()
            assert log.pop_through(want) == (model.popleft() if model else None)
        elif roll < 0.99:
            want = rng.choice([e[0] for e in model] + ["not-ours"])
            assert log.last_of(want) == next((e for e in reversed(model) if e[0] == want), None)
        else:
            log.clear()
            model.clear()
        assert len(log) == len(model)
