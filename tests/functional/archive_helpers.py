"""Shared by the archive and replay tests: streams built with ``worker.shapes``, S3 on moto."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from worker import config
from worker.records import RawRecord
from worker.shapes import build, render

T0 = 1_763_780_400  # 2025-11-22T03:00:00Z
PARENT = "shardId-00000001763700000000-aaaa0001"
CHILD = "shardId-00000001763790000000-bbbb0002"
OTHER = "shardId-00000001763700000001-cccc0003"
STATUSES = ("new", "paid", "shipped")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``cli.main`` configures logging to the (captured) stderr; later tests must not write there."""
    handlers, level = logging.root.handlers[:], logging.root.level
    worker_level = logging.getLogger("worker").level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    logging.getLogger("worker").setLevel(worker_level)


def s3_client(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


def make_cfg(url: str, *, bucket: str = "archive", tmp: Any = None, **archive: Any) -> config.Config:
    env = {
        "WORKER__AWS__ENDPOINT_URL": url,
        "WORKER__ARCHIVE__BUCKET": bucket,
        "WORKER__WORKER__TABLE": "Orders",
        "WORKER__PIPELINE__RETRY_BASE_SECONDS": "0.0",
        "WORKER__PIPELINE__RETRY_MAX_SECONDS": "0.0",
    }
    if tmp is not None:
        env["WORKER__DEADLETTER__URL"] = str(tmp / "dead")
        env["WORKER__WORKER__DATA_DIR"] = str(tmp / "state")
    for k, v in archive.items():
        env[f"WORKER__ARCHIVE__{k.upper()}"] = str(v).lower() if isinstance(v, bool) else str(v)
    return config.load(None, env=env)


def with_archive(cfg: config.Config, **changes: Any) -> config.Config:
    assert cfg.archive is not None
    return dataclasses.replace(cfg, archive=dataclasses.replace(cfg.archive, **changes))


def stream(
    n: int,
    *,
    shard: str = PARENT,
    first_seq: int = 49_000_000_000_000_000_000_000,
    start: int = T0,
    per_second: float = 1.0,
    seed: int = 1,
    keys: int = 12,
    shape: str = "adapter",
    key_prefix: str = "",
) -> list[RawRecord]:
    """``n`` records of one shard: inserts, modifies (some no-ops), removes and TTL expiries."""
    rng = random.Random(seed)
    items: dict[str, dict[str, Any]] = {}
    out = []
    for i in range(n):
        seq = first_seq + i * 10
        when = start + int(i / per_second)
        pk = f"{key_prefix}order#{rng.randrange(keys):03d}"
        old = items.get(pk)
        roll = rng.random()
        if old is None:
            new = {"pk": pk, "status": rng.choice(STATUSES), "total": Decimal(rng.randint(1, 500)), "n": i}
            canon = build("INSERT", {"pk": pk}, new=new, sequence=seq, created=when)
            items[pk] = new
        elif roll < 0.15:
            canon = build("REMOVE", {"pk": pk}, old=old, sequence=seq, created=when, ttl=roll < 0.05)
            del items[pk]
        elif roll < 0.25:  # a no-op MODIFY: an identical re-put
            canon = build("MODIFY", {"pk": pk}, old=old, new=dict(old), sequence=seq, created=when)
        else:
            new = dict(old, status=rng.choice(STATUSES), total=old["total"] + 1, n=i)
            canon = build("MODIFY", {"pk": pk}, old=old, new=new, sequence=seq, created=when)
            items[pk] = new
        out.append(RawRecord(render(canon, shape), f"{shard}/{seq}", shard))  # type: ignore[arg-type]
    return out


def seq_of(raw: RawRecord) -> int:
    return int(raw.where.rsplit("/", 1)[1])


class FlakyS3:
    """A fake in front of a real (moto) client: ``hook(op, call_number)`` may raise before a call,
    and ``after(op, call_number)`` after it succeeded (the answer is then lost to the caller)."""

    def __init__(
        self,
        real: Any,
        hook: Callable[[str, int], None] | None = None,
        after: Callable[[str, int], None] | None = None,
    ) -> None:
        self.real, self.hook, self.after = real, hook, after
        self.calls: dict[str, int] = {}

    def __getattr__(self, op: str) -> Any:
        fn = getattr(self.real, op)

        def call(**kwargs: Any) -> Any:
            n = self.calls[op] = self.calls.get(op, 0) + 1
            if self.hook:
                self.hook(op, n)
            out = fn(**kwargs)
            if self.after:
                self.after(op, n)
            return out

        return call
