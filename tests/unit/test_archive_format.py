"""The archive's layout, line format, damage reporting and the replay merge (pure, no S3)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import archive, shapes
from worker.archive import ArchivedObject, Finished, Loaded, MergeStats, ObjectName, Opened
from worker.aws import split_s3_url
from worker.decode import decode
from worker.errors import RecordError
from worker.records import RawRecord

UTC = dt.UTC
T0 = 1_763_780_400  # 2025-11-22T03:00:00Z
PARENT = "shardId-00000001763700000000-aaaa0001"
CHILD = "shardId-00000001763790000000-bbbb0002"


def rec(seq: int, *, shard: str | None = PARENT, created: int = T0, where: str | None = None, event: str = "INSERT"):
    item = {"pk": f"k{seq % 7}", "n": seq}
    canon = shapes.build(
        event,
        {"pk": item["pk"]},
        new=item if event != "REMOVE" else None,
        old=item if event != "INSERT" else None,
        sequence=seq,
        created=created,
    )
    return decode(RawRecord(shapes.render(canon, "adapter"), where or f"{shard}/{seq}", shard))


def obj(first: int, *, stream: str = PARENT, hour: int = 0, table: str = "Orders") -> ArchivedObject:
    name = ObjectName(table, dt.datetime.fromtimestamp(T0 + hour * 3600, UTC), stream, first)
    return ArchivedObject(name, name.key("changes/"), 100, f'"{first}"')


def loaded(o: ArchivedObject, seqs: list[int]) -> Loaded:
    lines = [archive.encode_line(rec(s, shard=o.name.stream), "Orders") for s in sorted(seqs)]
    entries = [(s, n, line) for n, (s, line) in enumerate(zip(sorted(seqs), lines, strict=True), start=1)]
    return Loaded(o, o.etag, entries, [], len(seqs), f"s3://bkt/{o.key}")


def read(data: bytes, key: str = "k"):
    """One object through parse and merge: (records, every error in order of discovery)."""
    o = obj(1)
    entries, errors, lines = archive.parse_object(data, "bkt", key)
    one = Loaded(o, o.etag, entries, errors, lines, f"s3://bkt/{key}")
    events = list(
        archive.merge([dataclasses.replace(o, name=dataclasses.replace(o.name, first=0))], lambda _: one, MergeStats())
    )
    records = [e for e in events if not isinstance(e, Opened | Finished | RecordError)]
    return records, errors + [e for e in events if isinstance(e, RecordError)]


def body(*lines: bytes) -> bytes:
    return gzip.compress(b"".join(x + b"\n" for x in lines))


# -- layout ------------------------------------------------------------------------------


def test_keys_are_hive_partitioned_deterministic_and_sort_by_first_sequence():
    hour = dt.datetime(2026, 11, 22, 5, tzinfo=UTC)
    a = ObjectName("Orders", hour, PARENT, 49_000_000_000_000_000_000_010).key("changes/")
    b = ObjectName("Orders", hour, PARENT, 9_000_000_000_000_000_000_020).key("changes/")
    assert a.startswith("changes/table=Orders/dt=2026-11-22/hour=05/shardId-")
    assert a.endswith("-0000000000000000049000000000000000000010.jsonl.gz")
    assert sorted([a, b]) == [b, a]  # zero-padded: text order is numeric order
    assert archive.parse_key(a, "changes/") == ObjectName("Orders", hour, PARENT, 49_000_000_000_000_000_000_010)


def test_38_digit_first_sequences_differing_in_the_last_digit_name_two_objects():
    hour = dt.datetime(2026, 11, 22, 5, tzinfo=UTC)
    one = ObjectName("Orders", hour, PARENT, 12345678901234567890123456789012345671).key("")
    two = ObjectName("Orders", hour, PARENT, 12345678901234567890123456789012345672).key("")
    assert one.endswith(f"{PARENT}-0012345678901234567890123456789012345671.jsonl.gz")  # written out by hand
    assert two.endswith(f"{PARENT}-0012345678901234567890123456789012345672.jsonl.gz")


@pytest.mark.parametrize(
    "key",
    [
        "changes/table=Orders/dt=2026-11-22/hour=05/notes.txt",
        "changes/table=Orders/dt=2026-11-22/hour=25/s-0000000000000000000000000000000000000001.jsonl.gz",
        "changes/table=Orders/dt=2026-11-22/s-0000000000000000000000000000000000000001.jsonl.gz",
        "other/table=Orders/dt=2026-11-22/hour=05/s-0000000000000000000000000000000000000001.jsonl.gz",
        "changes/table=Orders/dt=2026-11-22/hour=05/s-123.jsonl.gz",
    ],
)
def test_keys_that_are_not_archive_objects_are_recognised(key):
    assert archive.parse_key(key, "changes/") is None


def test_shardless_records_get_one_stream_per_source_file():
    a1 = rec(5, shard=None, where="fixtures/a.jsonl:1")
    a2 = rec(6, shard=None, where="fixtures/a.jsonl:2#Records[3]")
    b1 = rec(5, shard=None, where="fixtures/b.jsonl:1")
    assert archive.stream_of(a1) == archive.stream_of(a2) != archive.stream_of(b1)
    assert archive.stream_of(a1).startswith("file-")
    assert archive.stream_of(rec(5)) == PARENT


def test_split_url():
    assert split_s3_url("s3://b/changes") == ("b", "changes/")
    assert split_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        split_s3_url("https://b/x")


def test_shard_creation_time_is_read_from_dynamodb_shard_ids():
    assert archive.shard_created_ms(PARENT) == 1763700000000
    assert archive.shard_created_ms("file-abc") is None


# -- lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_a_line_keeps_the_record_exactly_as_delivered(shape):
    canon = shapes.build(
        "REMOVE", {"pk": "a"}, old={"pk": "a", "b": b"\x00\xff", "s": frozenset({"x"})}, sequence=77, ttl=True
    )
    original = decode(RawRecord(shapes.render(canon, shape), "f:1", PARENT))
    line = archive.encode_line(original, "Orders")
    env = orjson.loads(line)
    assert env["shard_id"] == PARENT and env["table"] == "Orders" and "where" not in env
    back = archive.parse_line(line, "s3://b/k:1")
    assert shapes.canonical(back) == shapes.canonical(original) == shapes.canonical(canon)
    assert back.ttl_delete and back.shard_id == PARENT and back.where == "s3://b/k:1"
    assert back.old_image == original.old_image


def test_sequence_numbers_are_found_without_parsing_and_never_confused():
    canon = shapes.build("INSERT", {"pk": "a"}, new={"pk": "a", "SequenceNumber": {"SequenceNumber": "9"}}, sequence=42)
    line = archive.encode_line(decode(RawRecord(canon, "f:1", PARENT)), "Orders")
    spaced = orjson.loads(line)
    other = orjson.dumps(spaced, option=orjson.OPT_INDENT_2).replace(b"\n", b"")  # "key": "value" spacing
    entries, errors, _ = archive.parse_object(body(line, other), "bkt", "k")
    assert [(seq, n) for seq, n, _ in entries] == [(42, 1), (42, 2)] and not errors


def test_a_line_without_shard_keeps_where_it_came_from():
    env = orjson.loads(archive.encode_line(rec(3, shard=None, where="fx.jsonl:9"), "Orders"))
    assert env["shard_id"] is None and env["where"] == "fx.jsonl:9"


# -- damage ------------------------------------------------------------------------------


def test_gunzip_reads_concatenated_members():
    data = gzip.compress(b"a\n") + gzip.compress(b"b\n")
    assert archive.gunzip(data) == (b"a\nb\n", None)
    # Members larger than the chunks fed to zlib, boundaries anywhere.
    rng = random.Random(3)
    parts = [rng.randbytes(rng.randint(50_000, 200_000)) for _ in range(4)]
    assert archive.gunzip(b"".join(gzip.compress(p, compresslevel=1) for p in parts)) == (b"".join(parts), None)


def test_a_truncated_object_keeps_its_complete_lines_and_reports_the_next_one():
    lines = [archive.encode_line(rec(s), "Orders") for s in range(1, 200)]
    data = body(*lines)
    cut = data[: len(data) * 2 // 3]
    records, errors = read(cut, "k.jsonl.gz")
    assert 0 < len(records) < 199
    assert [r.sequence for r in records] == list(range(1, len(records) + 1))
    (err,) = errors
    assert err.where == f"s3://bkt/k.jsonl.gz:{len(records) + 1}"
    assert "truncated" in err.reason


def test_corrupt_gzip_data_is_reported_with_its_line():
    good = gzip.compress(archive.encode_line(rec(1), "Orders") + b"\n")
    records, errors = read(good + b"\x1f\x8b\x08\x00garbage-garbage")
    assert [r.sequence for r in records] == [1]
    assert errors[0].where == "s3://bkt/k:2" and "gzip" in errors[0].reason
    records, errors = read(good + b"plain text")
    assert [r.sequence for r in records] == [1] and "not gzip" in errors[0].reason


def test_bad_lines_are_reported_with_key_and_line_and_the_rest_is_read():
    bad_record = orjson.loads(archive.encode_line(rec(3), "Orders"))
    bad_record["record"]["eventName"] = "UPSERT"
    data = body(
        archive.encode_line(rec(1), "Orders"),
        b"{not json",
        orjson.dumps({"shard_id": PARENT}),
        orjson.dumps(bad_record),
        archive.encode_line(rec(5), "Orders"),
    )
    records, errors = read(data, "p/k.jsonl.gz")
    assert [r.sequence for r in records] == [1, 5]
    assert [e.where for e in errors] == [
        "s3://bkt/p/k.jsonl.gz:2",
        "s3://bkt/p/k.jsonl.gz:3",
        "s3://bkt/p/k.jsonl.gz:4",
    ]
    assert "invalid JSON" in errors[0].reason and errors[0].payload == "{not json"
    assert errors[2].field == "eventName" and errors[2].payload["eventName"] == "UPSERT"


def test_an_empty_object_and_a_missing_final_newline_are_damage():
    _, errors = read(b"")
    assert errors[0].where == "s3://bkt/k:1"
    line = archive.encode_line(rec(1), "Orders")
    records, errors = read(gzip.compress(line + b"\n" + line[:30]))
    assert len(records) == 1 and errors[0].where == "s3://bkt/k:2" and "newline" in errors[0].reason


# -- merge -------------------------------------------------------------------------------


def run_merge(objects: list[ArchivedObject], contents: dict[str, list[int]]):
    loads: list[str] = []
    events: list = []

    def load(o):
        loads.append(o.key)
        return loaded(o, contents[o.key])

    stats = MergeStats()
    for ev in archive.merge(objects, load, stats):
        events.append(ev)
    seqs = [e.sequence for e in events if not isinstance(e, Opened | Finished)]
    return seqs, events, loads, stats


def test_overlapping_objects_yield_each_record_once_in_order():
    a, b, c = obj(1), obj(5), obj(20)
    seqs, events, _, stats = run_merge([a, b, c], {a.key: [1, 2, 3, 5, 6], b.key: [5, 6, 7, 8], c.key: [20, 21]})
    assert seqs == [1, 2, 3, 5, 6, 7, 8, 20, 21]
    assert stats.duplicates == 2
    assert [e.obj.key for e in events if isinstance(e, Finished)] == [a.key, b.key, c.key]


def test_objects_are_opened_only_when_their_range_is_reached():
    a, b = obj(1), obj(100)
    _, events, _, _ = run_merge([a, b], {a.key: [1, 2, 3], b.key: [100, 101]})
    kinds = [type(e).__name__ if isinstance(e, Opened | Finished) else e.sequence for e in events]
    # b is not read before a is exhausted: memory holds only overlapping objects.
    assert kinds == ["Opened", 1, 2, 3, "Finished", "Opened", 100, 101, "Finished"]


def test_records_interleaved_across_hour_objects_are_all_kept():
    # Creation times are approximate: seq 101 may fall into the next hour, 102 back into this one.
    a, b = obj(100, hour=0), obj(101, hour=1)
    seqs, *_ = run_merge([a, b], {a.key: [100, 102], b.key: [101, 103]})
    assert seqs == [100, 101, 102, 103]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_overlapping_cut_of_a_stream_merges_back_to_it(data):
    seqs = sorted(data.draw(st.sets(st.integers(1, 10**6), min_size=1, max_size=60)))
    n_objects = data.draw(st.integers(1, 6))
    contents: dict[str, list[int]] = {}
    objects = []
    for i in range(n_objects):
        # Each object holds a contiguous run of the stream starting at its first record.
        start = data.draw(st.integers(0, len(seqs) - 1))
        end = data.draw(st.integers(start + 1, len(seqs)))
        o = obj(seqs[start], hour=i)
        if o.key in contents:
            continue
        contents[o.key] = seqs[start:end]
        objects.append(o)
    # Cover the stream (a checkpoint never passes a record that no object holds).
    covered = {s for v in contents.values() for s in v}
    rest = [s for s in seqs if s not in covered]
    if rest:
        o = obj(rest[0], hour=99)
        contents[o.key] = rest
        objects.append(o)
    objects.sort(key=lambda o: (o.name.first, o.name.hour))
    got, _, _, stats = run_merge(objects, contents)
    assert got == seqs
    assert stats.duplicates == sum(len(v) for v in contents.values()) - len(seqs)


def test_a_damaged_copy_is_reported_and_a_good_copy_replaces_it():
    a, b = obj(1), obj(2)
    la, lb = loaded(a, [1, 2, 3]), loaded(b, [2, 3, 4])
    bad = orjson.loads(la.entries[1][2])
    bad["record"]["eventName"] = "UPSERT"
    la.entries[1] = (2, 2, orjson.dumps(bad))
    # A line whose record does not have the sequence number found in it is damage too.
    lb.entries[2] = (4, 3, archive.encode_line(rec(5, shard=b.name.stream), "Orders"))
    events = list(archive.merge([a, b], lambda o: la if o is a else lb, MergeStats()))
    records = [e.sequence for e in events if not isinstance(e, Opened | Finished | RecordError)]
    errors = [e for e in events if isinstance(e, RecordError)]
    assert records == [1, 2, 3]
    assert [e.where for e in errors] == [f"s3://bkt/{a.key}:2", f"s3://bkt/{b.key}:3"]
    assert errors[0].field == "eventName"


def test_plan_orders_parents_before_children_and_groups_by_table():
    objs = [obj(50, stream=CHILD), obj(10, stream=PARENT), obj(30, stream=PARENT), obj(5, stream=PARENT, table="Zeta")]
    random.Random(1).shuffle(objs)
    plan = archive.plan(objs)
    assert [k for k, _ in plan] == [("Orders", PARENT), ("Orders", CHILD), ("Zeta", PARENT)]
    assert [o.name.first for o in plan[0][1]] == [10, 30]


def test_prefetcher_returns_each_object_in_plan_order():
    objs = [obj(i) for i in range(1, 12)]
    seen = []

    def load(o):
        seen.append(o.key)
        return loaded(o, [o.name.first])

    pf = archive.Prefetcher(objs, load, window=3)
    try:
        got = [pf.get(o).entries[0][0] for o in objs]
    finally:
        pf.close()
    assert got == list(range(1, 12)) and sorted(seen) == sorted(o.key for o in objs)
