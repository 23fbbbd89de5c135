"""Archive sink and replay against a moto S3 server: records per second, bytes per record, PUTs.

Every stack runs in one process against one moto server (``worker.emulators.start_moto``)
on the same records of the shared workload (:mod:`bench.workload`: ~1 KB items with 16
attributes), fed in batches of ``--batch`` records (KCL's default is 1,000), one flush
per batch, wall-clock time (against moto it is dominated by requests).

Archive stacks (decode, diff and sink through the worker's ``Pipeline``):

* ``ArchiveSink``: deterministic names, conditional writes, each object written once at
  rotation (``--max-records``), ISA-L gzip level 2 (the default; and 0, 3); and with
  rotation at every batch (one object per flush: smaller objects);
* ``UuidPerBatch`` (the baseline): one gzip object per flush under a random UUID name,
  unconditional, as a Firehose-style delivery does; a retried batch duplicates.

Replay stacks (all read the archive the ``ArchiveSink`` row wrote, plus one overlapping
redelivery of the last 20% of the records):

* ``replay``: ``worker replay``'s engine (list, prefetch, gunzip, decode, dedupe, order)
  into the real pipeline (diff included) with a ``CountingSink`` (a fake that counts and
  drops, so the figure is the replay's own cost), and ``--dry-run`` (no pipeline);
* ``plain read`` (the baseline): list and GET every object sequentially, gunzip, parse
  each line with orjson; no decoding, no dedupe, no order, no pipeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bench.aggregates import CountingClient
from bench.workload import Workload, batches, generate
from worker import archive, config
from worker.emulators import FAKE_CREDENTIALS, start_moto
from worker.errors import RecordError
from worker.pipeline import Pipeline
from worker.records import RawRecord, json_default
from worker.sinks import archive as sink_mod
from worker.testing import MemoryDeadLetters

UTC = dt.UTC


class CountingS3(CountingClient):
    """``bench.aggregates.CountingClient`` that also counts the bytes uploaded."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.sent = 0

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)

        def counted(**kwargs: Any) -> Any:
            body = kwargs.get("Body")
            if isinstance(body, bytes):
                self.sent += len(body)
            return call(**kwargs)

        return counted


class CountingSink:
    """A fake sink: counts what is flushed and keeps nothing (a real sink's memory is flat too)."""

    name = "counting"

    def __init__(self) -> None:
        self.pending = 0
        self.flushed = 0

    def add(self, change: Any) -> None:
        self.pending += 1

    def flush(self) -> Sequence[RecordError]:
        self.flushed += self.pending
        self.pending = 0
        return ()

    def close(self) -> None:
        self.pending = 0


class UuidPerBatch:
    """The baseline: each flush PUTs its batch as one gzip object named by a random UUID."""

    name = "uuid"

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix
        self.pending: list[bytes] = []

    def add(self, change: Any) -> None:
        rec = change.record
        env = {"shard_id": rec.shard_id, "table": "Orders", "record": rec.original()}
        self.pending.append(orjson.dumps(env, default=json_default))

    def flush(self) -> Sequence[RecordError]:
        if self.pending:
            body = gzip.compress(b"".join(x + b"\n" for x in self.pending), compresslevel=6, mtime=0)
            self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{uuid.uuid4()}.jsonl.gz", Body=body)
            self.pending.clear()
        return ()

    def close(self) -> None:
        self.pending.clear()


@dataclass
class ArchiveRow:
    stack: str
    records: int
    seconds: float
    objects: int
    stored: int  # bytes in S3
    puts: int
    sent: int  # bytes uploaded (rewrites included)


@dataclass
class ReplayRow:
    stack: str
    records: int  # unique records delivered (or lines parsed, for the baseline)
    seconds: float
    read: int  # compressed bytes read


def stored(s3: Any, bucket: str, prefix: str) -> tuple[int, int]:
    objs, size, token = 0, 0, None
    while True:
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        for o in page.get("Contents", []):
            objs, size = objs + 1, size + o["Size"]
        if not page.get("IsTruncated"):
            return objs, size
        token = page["NextContinuationToken"]


def archive_run(
    stack: str, sink: Any, counting: CountingS3, raws: list[RawRecord], batch: int, prefix: str
) -> ArchiveRow:
    p = Pipeline([sink], MemoryDeadLetters())
    start = time.perf_counter()
    for b in batches(raws, batch):  # as a shard process: add, commit what is durable; flush at the end
        p.add(b)
        p.commit()
    p.flush()
    seconds = time.perf_counter() - start
    objs, size = stored(counting.real, "bench", prefix)
    return ArchiveRow(stack, len(raws), seconds, objs, size, counting.calls.get("put_object", 0), counting.sent)


def plain_read(s3: Any, prefix: str, repeats: int) -> ReplayRow:
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        lines = read = 0
        for obj in archive.list_all(s3, "bench", prefix):
            data = s3.get_object(Bucket="bench", Key=obj.key)["Body"].read()
            read += len(data)
            for line in gzip.decompress(data).splitlines():
                orjson.loads(line)
                lines += 1
        seconds = time.perf_counter() - start
        best = min(best or seconds, seconds)
    return ReplayRow("plain read (baseline)", lines, best or 0.0, read)


def replay_run(
    stack: str, cfg: config.Config, s3: Any, prefix: str, *, dry: bool, prefetch: int, repeats: int
) -> ReplayRow:
    from worker.commands import replay
    from worker.sources.replay import Options

    opts = Options(
        bucket="bench",
        prefix=prefix,
        since=dt.datetime(2000, 1, 1, tzinfo=UTC),
        until=dt.datetime(2100, 1, 1, tzinfo=UTC),
        tables=("Orders",),
        sinks=("memory",),
        dry_run=dry,
        prefetch=prefetch,
    )
    best = None
    for _ in range(repeats):
        sink = CountingSink()
        pipeline = None if dry else Pipeline([sink], MemoryDeadLetters())
        start = time.perf_counter()
        summary = replay.execute(cfg, opts, s3=s3, pipeline=pipeline, err=io.StringIO())
        seconds = time.perf_counter() - start
        if not dry:
            assert sink.flushed == summary.records["replayed"]
        best = min(best or seconds, seconds)
    return ReplayRow(stack, summary.records["replayed"], best or 0.0, summary.bytes_read)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per flush (KCL maxRecords)")
    parser.add_argument("--max-records", type=int, default=10_000, help="archive rotation (records per object)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs (each archive run its own prefix)")
    args = parser.parse_args(argv)

    for k, v in FAKE_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    work: Workload = generate(args.records, args.seed)
    raws = work.raw_adapter()
    raw_json = sum(len(x) for x in work.adapter)
    moto = start_moto()
    try:
        env = {
            "WORKER__AWS__ENDPOINT_URL": moto.url,
            "WORKER__ARCHIVE__BUCKET": "bench",
            "WORKER__WORKER__TABLE": "Orders",
        }
        cfg = config.load(None, env=env)
        from worker.aws import client

        real = client(cfg, "s3")
        real.create_bucket(Bucket="bench")
        rows: list[ArchiveRow] = []

        def best(stack: str, make: Any, prefix: str) -> ArchiveRow:
            runs = []
            for i in range(args.repeats):
                counting = CountingS3(real)
                p = prefix if i == 0 else f"{prefix[:-1]}-r{i}/"  # a sibling: listings never overlap
                runs.append(archive_run(stack, make(counting, p), counting, raws, args.batch, p))
            return min(runs, key=lambda r: r.seconds)

        for level in (2, 0, 3):
            rows.append(
                best(
                    f"ArchiveSink isal {level}",
                    lambda c, p, level=level: sink_mod.ArchiveSink(
                        c, "bench", p, table="Orders", max_records=args.max_records, compress_level=level
                    ),
                    f"l{level}/",
                )
            )
        rows.append(
            best(
                f"ArchiveSink isal 2, rot {args.batch}",
                lambda c, p: sink_mod.ArchiveSink(c, "bench", p, table="Orders", max_records=args.batch),
                "rot/",
            )
        )
        rows.append(best("UuidPerBatch (baseline)", lambda c, p: UuidPerBatch(c, "bench", p), "uuid/"))

        # A redelivery of the last 20% on other boundaries: overlapping objects for the replay to dedupe.
        redo = CountingS3(real)
        again = sink_mod.ArchiveSink(redo, "bench", "l2/", table="Orders", max_records=args.max_records)
        archive_run("redelivery", again, redo, raws[len(raws) * 4 // 5 :], args.batch // 3 or 1, "l2/")

        r = args.repeats
        replays = [
            replay_run(
                "replay -> Pipeline(CountingSink), prefetch 4", cfg, real, "l2/", dry=False, prefetch=4, repeats=r
            ),
            replay_run(
                "replay -> Pipeline(CountingSink), prefetch 1", cfg, real, "l2/", dry=False, prefetch=1, repeats=r
            ),
            replay_run("replay --dry-run, prefetch 4", cfg, real, "l2/", dry=True, prefetch=4, repeats=r),
            plain_read(real, "l2/", r),
        ]
    finally:
        moto.stop()
    print_tables(rows, replays, raw_json, args)


def print_tables(rows: list[ArchiveRow], replays: list[ReplayRow], raw_json: int, args: argparse.Namespace) -> None:
    n = args.records
    print(f"workload: {n} records, {raw_json / n:.0f} B of adapter JSON per record", end="; ")
    print(f"batch {args.batch}; rotation every {args.max_records} records; best of {args.repeats}")
    print()
    base = rows[-1]
    head = (
        f"{'archive stack':<28} {'records/s':>9} {'vs base':>7} {'objects':>7} {'B/record':>8} "
        f"{'ratio':>5} {'PUTs':>5} {'uploaded B/rec':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        rate = r.records / r.seconds
        print(
            f"{r.stack:<28} {rate:>9.0f} {rate / (base.records / base.seconds):>6.2f}x {r.objects:>7} "
            f"{r.stored / r.records:>8.0f} {raw_json / r.stored:>5.1f} {r.puts:>5} {r.sent / r.records:>14.0f}"
        )
    worker = rows[0]
    ratio = worker.sent / worker.stored
    print(
        f"target: {worker.stack}: bytes uploaded <= 1.05x bytes stored: {ratio:.2f}x, "
        f"{'met' if ratio <= 1.05 else 'NOT met'}"
    )
    print(
        f"target: {worker.stack}: one PUT per object: {worker.puts} PUTs, {worker.objects} objects, "
        f"{'met' if worker.puts == worker.objects else 'NOT met'}"
    )
    print()
    base_r = replays[-1]
    head = f"{'replay stack':<44} {'records':>7} {'records/s':>9} {'vs base':>7} {'MB/s read':>9}"
    print(head)
    print("-" * len(head))
    for r in replays:
        rate = r.records / r.seconds
        print(
            f"{r.stack:<44} {r.records:>7} {rate:>9.0f} {rate / (base_r.records / base_r.seconds):>6.2f}x "
            f"{r.read / r.seconds / 1e6:>9.2f}"
        )


if __name__ == "__main__":
    main()
