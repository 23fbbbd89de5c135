"""The archive sink against moto S3: layout, durability at every flush, one write per object, conflicts."""

from __future__ import annotations

import gzip

import orjson
import pytest

from tests.functional.archive_helpers import PARENT, T0, FlakyS3, make_cfg, s3_client, seq_of, stream
from worker import archive
from worker.decode import decode
from worker.errors import FatalError, RetryableError
from worker.pipeline import Pipeline, StopProcessing
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.shapes import build, canonical, render
from worker.sinks import archive as sink_mod
from worker.testing import MemoryDeadLetters

BUCKET = "archive"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_sink(url, s3=None, clock=None, **archive_cfg):
    cfg = make_cfg(url, **archive_cfg)
    return sink_mod.build(cfg, provision=True, s3=s3, clock=clock)


def pipeline(sink, attempts=4):
    return Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(attempts=attempts, sleep=no_sleep))


def archived(url):
    """(objects, unique records, damage) under the default prefix."""
    return archive.read_all(s3_client(url), BUCKET, "changes/")


def test_every_flush_makes_every_buffered_record_durable(moto_url):
    sink = make_sink(moto_url)
    p = pipeline(sink)
    records = stream(95)
    for i in range(0, 95, 20):
        pos = p.process(records[i : i + 20])
        # What the pipeline may now checkpoint is readable in S3, complete.
        _, got, errors = archived(moto_url)
        assert not errors
        assert [r.sequence for r in got] == [seq_of(r) for r in records[: i + 20]]
        assert pos.sequences[PARENT] == str(seq_of(records[min(i + 19, 94)]))
    # A full flush rotates: one object per flush, each written once.
    objects = archive.list_all(s3_client(moto_url), BUCKET, "changes/")
    assert len(objects) == 5 and sink.puts == 5


def test_on_its_own_cadence_each_object_is_written_once_at_rotation(moto_url):
    clock = Clock()
    sink = make_sink(moto_url, clock=clock, max_records=40)
    p = Pipeline([sink], MemoryDeadLetters(), retry=RetryPolicy(attempts=2, sleep=no_sleep), commit_interval=0.0)
    records = stream(95)
    reported = []
    for i in range(0, 95, 10):  # KCL-sized batches: add, then commit what is durable
        p.add(records[i : i + 10])
        reported.append(p.commit().sequences.get(PARENT))
        _, got, _ = archived(moto_url)
        durable = {r.sequence for r in got}
        if reported[-1] is not None:  # every reported position is readable in S3, with all before it
            assert all(seq_of(r) in durable for r in records if seq_of(r) <= int(reported[-1]))
    # Rotation at 40 records: objects of records 1-40 and 41-80 written, 81-95 still open.
    assert [x for x in reported if x is not None] == [str(seq_of(records[39])), str(seq_of(records[79]))]
    assert sink.puts == 2
    objects = archive.list_all(s3_client(moto_url), BUCKET, "changes/")
    stored = sum(o.size for o in objects)
    assert sink.bytes_put == stored  # no rewrites: every byte uploaded is stored once
    assert p.flush().sequences == {PARENT: str(seq_of(records[-1]))}
    assert sink.puts == 3 and len(archived(moto_url)[1]) == 95


def test_layout_names_and_lossless_envelopes(moto_url):
    sink = make_sink(moto_url)
    shapes_ = ("adapter", "multilang", "wire", "boto3", "lambda", "cli")
    raws = []
    for i, shape in enumerate(shapes_):
        canon = build(
            "REMOVE" if i == 3 else "INSERT",
            {"pk": f"k{i}"},
            new=None if i == 3 else {"pk": f"k{i}", "bin": b"\x01\x02", "ss": frozenset({"a", "b"})},
            old={"pk": f"k{i}", "bin": b"\x01"} if i == 3 else None,
            sequence=1000 + i,
            created=T0 + i * 1800,  # two objects per hour partition boundary
            ttl=i == 3,
        )
        raws.append((canon, RawRecord(render(canon, shape), f"{PARENT}/{1000 + i}", PARENT)))  # type: ignore[arg-type]
    pipeline(sink).process([r for _, r in raws])
    s3 = s3_client(moto_url)
    keys = sorted(o.key for o in archive.list_all(s3, BUCKET, "changes/"))
    assert keys == [
        f"changes/table=Orders/dt=2025-11-22/hour=03/{PARENT}-{1000:040d}.jsonl.gz",
        f"changes/table=Orders/dt=2025-11-22/hour=04/{PARENT}-{1002:040d}.jsonl.gz",
        f"changes/table=Orders/dt=2025-11-22/hour=05/{PARENT}-{1004:040d}.jsonl.gz",
    ]
    lines = []
    for key in keys:
        lines += gzip.decompress(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).splitlines()
    envelopes = [orjson.loads(x) for x in lines]
    assert all(e["shard_id"] == PARENT and e["table"] == "Orders" for e in envelopes)
    # Each line decodes to the record the stream delivered, in any shape it came in.
    for (canon, _), env in zip(raws, envelopes, strict=True):
        assert canonical(decode(RawRecord(env["record"], "x", PARENT))) == canonical(canon)
    assert envelopes[3]["record"]["userIdentity"]["PrincipalId"] == "dynamodb.amazonaws.com"  # TTL delete kept


def test_noops_and_ttl_expiries_are_archived_too(moto_url):
    sink = make_sink(moto_url)
    records = stream(80, seed=4)
    p = pipeline(sink)
    p.process(records)
    assert p.stats.changes["noop"] > 0 and p.stats.changes["ttl-expire"] > 0
    _, got, _ = archived(moto_url)
    assert len(got) == 80
    assert sum(1 for r in got if r.ttl_delete) == p.stats.changes["ttl-expire"]


def test_rotation_by_records_bytes_and_age(moto_url):
    s3 = s3_client(moto_url)

    def keys():
        return sorted(o.key for o in archive.list_all(s3, BUCKET, "changes/"))

    sink = make_sink(moto_url, max_records=10)
    pipeline(sink).process(stream(25))
    assert len(keys()) == 3  # 10 + 10 + 5
    firsts = [archive.parse_key(k, "changes/").first for k in keys()]
    assert firsts == sorted(firsts) and firsts[1] - firsts[0] == 100

    sink = make_sink(moto_url, max_bytes=2000, prefix="bytes/")
    pipeline(sink).process(stream(25))
    objs = archive.list_all(s3, BUCKET, "bytes/")
    assert len(objs) > 3
    for o in objs:
        raw = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=o.key)["Body"].read())
        assert len(raw) <= 2000

    clock = Clock()
    sink = make_sink(moto_url, clock=clock, max_age_seconds=60, prefix="age/")
    p = pipeline(sink)
    records = stream(30)
    p.add(records[:10])
    clock.now = 30
    p.add(records[10:20])  # same object, still open: nothing written yet
    assert archive.list_all(s3, BUCKET, "age/") == []
    clock.now = 61
    p.add(records[20:])  # the object aged out: written once, a new one starts
    objs = archive.list_all(s3, BUCKET, "age/")
    assert [o.name.first for o in objs] == [seq_of(records[0])]
    assert all(o.name.first == seq_of(records[20]) for o in sink.open.values())
    p.flush()
    objs = archive.list_all(s3, BUCKET, "age/")
    assert [o.name.first for o in objs] == [seq_of(records[0]), seq_of(records[20])]


def test_a_redelivery_with_other_batch_boundaries_overlaps_but_loses_nothing(moto_url):
    records = stream(60)
    first = make_sink(moto_url)
    pipeline(first).process(records[:40])  # written, then the process dies before checkpointing
    second = make_sink(moto_url)  # restarts from the checkpoint before records[0]
    p = pipeline(second)
    p.process(records[:25])  # other boundaries: the same name, fewer records than S3 holds
    p.process(records[25:])
    _, got, _ = archived(moto_url)
    assert [r.sequence for r in got] == [seq_of(r) for r in records]
    # The first write met the longer object and adopted it instead of shrinking it; the second
    # starts at records[25] and overlaps it (readers remove duplicates).
    assert second.conflicts == 1 and second.merges == 0
    s3 = s3_client(moto_url)
    objs = archive.list_all(s3, BUCKET, "changes/")
    lines = [
        line
        for o in objs
        for line in gzip.decompress(s3.get_object(Bucket=BUCKET, Key=o.key)["Body"].read()).splitlines()
    ]
    assert len(objs) == 2 and len(lines) == 40 + 35


def test_a_zombie_writer_can_never_shrink_an_object(moto_url):
    records = stream(40)
    zombie, owner = make_sink(moto_url), make_sink(moto_url)
    zp, op = pipeline(zombie), pipeline(owner)
    op.process(records[:30])  # the new owner (from the same checkpoint) writes 30 and checkpoints them ...
    zp.process(records[:10])  # ... then the old lease owner flushes its 10, from its older view
    _, got, _ = archived(moto_url)
    assert [r.sequence for r in got] == [seq_of(r) for r in records[:30]]


def test_without_conditional_writes_a_zombie_would_lose_acknowledged_records(moto_url):
    # Why conditional writes are on by default: the same schedule with plain overwrites.
    records = stream(40)
    zombie = make_sink(moto_url, conditional_writes=False)
    owner = make_sink(moto_url, conditional_writes=False)
    pipeline(owner).process(records[:30])
    pipeline(zombie).process(records[:10])
    _, got, _ = archived(moto_url)
    assert [r.sequence for r in got] == [seq_of(r) for r in records[:10]]  # 10..29 were acknowledged, now gone


def test_a_put_whose_answer_was_lost_is_not_duplicated(moto_url):
    def lose_answer(op, n):
        if op == "put_object" and n == 2:
            raise ConnectionError("connection reset after the upload")

    s3 = FlakyS3(s3_client(moto_url), after=lose_answer)
    sink = make_sink(moto_url, s3=s3)
    p = pipeline(sink)
    records = stream(30)
    p.process(records[:10])
    p.process(records[10:])  # first attempt wrote, but the sink saw an error; the retry finds it written
    assert p.stats.retries == 1
    _, got, _ = archived(moto_url)
    assert [r.sequence for r in got] == [seq_of(r) for r in records]
    assert len(archive.list_all(s3_client(moto_url), BUCKET, "changes/")) == 2  # one per full flush


def test_a_failed_flush_keeps_its_buffer_for_the_retry(moto_url):
    def fail_twice(op, n):
        if op == "put_object" and n in (2, 3):
            raise RetryableError("SlowDown")

    sink = make_sink(moto_url, s3=FlakyS3(s3_client(moto_url), hook=fail_twice), max_records=5)
    p = pipeline(sink)
    p.process(stream(12))
    assert p.stats.retries == 2
    _, got, _ = archived(moto_url)
    assert len(got) == 12


def test_missing_bucket_stops_without_retrying(moto_url):
    cfg = make_cfg(moto_url, bucket="nowhere")
    sink = sink_mod.create(cfg, provision=False)
    p = pipeline(sink)
    with pytest.raises(StopProcessing, match="NoSuchBucket"):
        p.process(stream(2))
    assert p.stats.retries == 0


def test_a_damaged_object_is_never_overwritten(moto_url):
    records = stream(10)
    s3 = s3_client(moto_url)
    s3.create_bucket(Bucket=BUCKET)
    first = make_sink(moto_url)
    pipeline(first).process(records[:5])
    (obj,) = archive.list_all(s3, BUCKET, "changes/")
    s3.put_object(Bucket=BUCKET, Key=obj.key, Body=b"\x1f\x8b\x08\x00broken")
    with pytest.raises(StopProcessing, match="damaged"):
        pipeline(make_sink(moto_url)).process(records)
    assert s3.get_object(Bucket=BUCKET, Key=obj.key)["Body"].read() == b"\x1f\x8b\x08\x00broken"
    with pytest.raises(FatalError):
        sink_mod._lines(b"\x1f\x8b\x08\x00broken", obj.key)


def test_report_counts_objects_and_unique_records(moto_url):
    records = stream(30)
    pipeline(make_sink(moto_url, max_records=10)).process(records[:20])
    pipeline(make_sink(moto_url, max_records=10)).process(records[5:30])  # overlapping objects
    sink = make_sink(moto_url)
    assert sink.report() == {"objects": 5, "records": 30}


def test_shardless_fixture_records_of_two_files_do_not_collide(moto_url):
    canon = build("INSERT", {"pk": "a"}, new={"pk": "a"}, sequence=5)
    sink = make_sink(moto_url)
    pipeline(sink).process([RawRecord(canon, "a.jsonl:1"), RawRecord(canon, "b.jsonl:1")])
    assert sink.report() == {"objects": 2, "records": 2}


def test_config_rejects_bad_archive_settings():
    from worker import config
    from worker.errors import ConfigError

    for env, key in [
        ({"WORKER__ARCHIVE__PREFIX": "no-slash"}, "archive.prefix"),
        ({"WORKER__ARCHIVE__MAX_AGE_SECONDS": "-1"}, "archive.max_age_seconds"),
        ({"WORKER__ARCHIVE__COMPRESS_LEVEL": "11"}, "archive.compress_level"),
    ]:
        with pytest.raises(ConfigError) as err:
            config.load(None, env={"WORKER__ARCHIVE__BUCKET": "bkt", **env})
        assert err.value.key == key
