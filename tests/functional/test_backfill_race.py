"""Backfill exactly once while live writes race the scan (moto server, osmem-server, real HTTP).

Each seeded schedule: items loaded before the stream is enabled; then a random
interleaving of scan pages (segments in random order), live writes (new keys,
overwrites, updates, deletes, re-puts of deleted keys), live stream consumption
and crashes of the backfill (a fresh driver resumes from the state dir; during
the apply, a crash after part of the snapshot was made durable). At the end the
aggregates and the index must equal a recomputation from the final table.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from tests.functional.backfill_helpers import (
    LiveConsumer,
    Writer,
    assert_sinks_equal_table,
    create_source,
    random_item,
    write_config,
)
from worker import config
from worker.app import build_pipeline
from worker.aws import client
from worker.sources.backfill import Backfill, ScanOptions

SCHEDULES = 3


def driver(cfg: config.Config, state: Path, rng: random.Random, *, resume: bool) -> Backfill:
    options = ScanOptions(segments=3, page_items=rng.randint(2, 6), settle_seconds=0)
    b = Backfill(client(cfg, "dynamodb"), client(cfg, "dynamodbstreams"), cfg.worker.table, state, options)
    b.start(resume=resume)
    return b


def run_schedule(seed: int, moto: str, osmem: str, tmp: Path) -> Counter[str]:
    rng = random.Random(seed)
    cfg = config.load(write_config(tmp / f"s{seed}.toml", moto, osmem, tmp, index=f"orders-{seed}"), env={})
    keys = [f"o-{i:05d}" for i in range(rng.randint(12, 30))]
    ddb = create_source(cfg, [random_item(rng, k) for k in keys])
    writer = Writer(ddb, cfg.worker.table, rng, keys)
    live = LiveConsumer(cfg)
    state = tmp / f"state-{seed}"
    seen: Counter[str] = Counter()

    b = driver(cfg, state, rng, resume=False)
    segments = list(range(3))
    while segments:
        roll = rng.random()
        if roll < 0.25:
            seg = rng.choice(segments)
            if not b.scan_page(seg):
                segments.remove(seg)
            seen["page"] += 1
        elif roll < 0.85:
            writer.write()
            seen["write"] += 1
        elif roll < 0.95:
            live.consume(rng.randint(1, 5))
            seen["live"] += 1
        else:
            b = driver(cfg, state, rng, resume=True)  # crash: a new process resumes the scan
            seen["crash-scan"] += 1
    for _ in range(rng.randint(0, 5)):
        writer.write()
    b.close_index()
    # Apply: maybe crash after part of the snapshot was flushed, then resume.
    if seed % 2 or rng.random() < 0.5:  # at least every other schedule
        pipeline = build_pipeline(cfg, provision=True)
        part = rng.randint(1, 10)
        for n, record in enumerate(b.records(), start=1):
            pipeline.add_record(record)
            if n >= part:
                break
        pipeline.flush()
        pipeline.close()
        b = driver(cfg, state, rng, resume=True)
        seen["crash-apply"] += 1
    for _ in range(rng.randint(0, 5)):
        writer.write()
        live.consume(rng.randint(1, 3))
    b.apply(build_pipeline(cfg, provision=True))
    # Run again: a complete backfill is a no-op.
    assert driver(cfg, state, rng, resume=False).apply(build_pipeline(cfg, provision=True)) == 0
    for _ in range(rng.randint(0, 5)):
        writer.write()
    live.drain()
    assert_sinks_equal_table(cfg)
    seen.update(writer.counts)
    return seen


@pytest.mark.slow
def test_backfill_races_live_writes_and_ends_equal_to_the_table(moto_url, osmem_url, tmp_path):
    seen: Counter[str] = Counter()
    for seed in range(1, SCHEDULES + 1):
        client_cfg = tmp_path / f"seed{seed}"
        client_cfg.mkdir()
        try:
            seen.update(run_schedule(seed, moto_url, osmem_url, client_cfg))
        except AssertionError as exc:
            raise AssertionError(f"schedule seed {seed}: {exc}") from exc
        # Fresh emulated AWS state for the next schedule (the index has its own name).
        from urllib.request import Request, urlopen

        urlopen(Request(f"{moto_url}/moto-api/reset", method="POST", data=b""), timeout=10).close()
    for what in ("page", "write", "live", "crash-scan", "crash-apply", "delete", "re-put", "update", "put-over"):
        assert seen[what] > 0, (what, seen)
