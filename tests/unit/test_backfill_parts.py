"""Backfill parts without AWS: snapshot records, the read budget, the state file and spools,
and the items file of ``worker local --table-items``."""

from __future__ import annotations

import orjson
import pytest

from worker.decode import decode
from worker.errors import ConfigError, FatalError, RecordError
from worker.records import RawRecord
from worker.sources.backfill import ReadBudget
from worker.sources.backfill_state import Progress, SegmentProgress, Workdir
from worker.sources.snapshot import Snapshot, snapshot_record
from worker.sources.table_items import KeySchema, read_items

SNAP = Snapshot("abc123", "Orders", "arn:aws:dynamodb:us-east-1:1:table/Orders/stream/2026-12-01T00:00:00", 1.8e9)


def test_a_snapshot_record_sits_at_its_position_for_items_and_at_its_ordinal_in_its_shard():
    rec = snapshot_record(SNAP, 17, {"id": {"S": "a"}}, {"id": {"S": "a"}, "n": {"N": "2"}})
    assert rec.shard_id == "snapshot-abc123" and rec.sequence == 17 and rec.item_sequence == 0
    assert rec.new_image == {"id": "a", "n": 2} and rec.created_at.timestamp() == 1.8e9
    assert rec.original()["snapshot"]["position"] == "trim-horizon"


def test_the_marker_survives_the_archive_text_through_either_decode_path():
    rec = snapshot_record(SNAP, 3, {"id": {"S": "a"}}, {"id": {"S": "a"}})
    text = rec.original_json()
    again = decode(RawRecord(text, "x", "snapshot-abc123"))
    assert again.snapshot_at == "0" and again.item_sequence == 0 and again.sequence == 3
    plain = orjson.loads(text)
    del plain["snapshot"]
    stream = decode(RawRecord(orjson.dumps(plain), "x", "s"))
    assert stream.snapshot_at is None and stream.item_sequence == 3


def test_a_snapshot_marker_without_a_position_is_a_record_error():
    obj = orjson.loads(snapshot_record(SNAP, 3, {"id": {"S": "a"}}, {"id": {"S": "a"}}).original_json())
    obj["snapshot"]["at"] = 5
    with pytest.raises(RecordError) as err:
        decode(RawRecord(orjson.dumps(obj), "f:1"))
    assert err.value.field == "snapshot.at"


def test_the_read_budget_waits_until_consumed_capacity_fits_the_rate():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    budget = ReadBudget(50.0, lambda: now[0], sleep)
    budget.wait()
    budget.charge(100.0)  # two seconds' worth
    now[0] += 0.5
    budget.wait()
    assert slept == [1.5]
    assert ReadBudget(0.0, lambda: 0.0, sleep).wait() is None and len(slept) == 1


def test_a_spool_is_cut_back_to_what_the_state_file_recorded(tmp_path):
    wd = Workdir(tmp_path / "w")
    wd.cut_spool(0, 0)
    n = wd.append(0, [{"id": {"S": "a"}}])
    wd.save(Progress({"id": "x"}, [SegmentProgress(bytes=n, items=1)]))
    wd.append(0, [{"id": {"S": "b"}}])  # a page the crash left unrecorded
    progress = wd.load()
    assert progress is not None and progress.segments[0].bytes == n
    wd.cut_spool(0, progress.segments[0].bytes)
    assert list(wd.read_lines(wd.segment_path(0))) == [{"id": {"S": "a"}}]


def test_items_file_accepts_scan_lines_item_wrappers_and_pages(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": {"S": "a"}}\n\n{"Item": {"id": {"S": "b"}}}\n{"Items": [{"id": {"S": "c"}}, {"id": {"N": "4"}}]}\n'
    )
    got = list(read_items(path))
    assert [w for w, _ in got] == [f"{path}:1", f"{path}:3", f"{path}:4#Items[0]", f"{path}:4#Items[1]"]
    assert [i["id"] for _, i in got] == [{"S": "a"}, {"S": "b"}, {"S": "c"}, {"N": "4"}]


@pytest.mark.parametrize(
    ("text", "what"), [("{nope", "not JSON"), ('{"id": {"X": "a"}}', "not a DynamoDB-JSON item"), ("[1]", "item")]
)
def test_a_bad_items_line_names_file_and_line(tmp_path, text, what):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": {"S": "a"}}\n' + text + "\n")
    with pytest.raises(FatalError) as err:
        list(read_items(path))
    assert f"{path}:2" in str(err.value) and what in str(err.value)


def test_table_key_parses_and_names_the_flag_when_wrong():
    assert KeySchema.parse("pk,sk:N").attributes == (("pk", "S"), ("sk", "N"))
    with pytest.raises(ConfigError) as err:
        KeySchema.parse("pk:Q")
    assert err.value.key == "--table-key"
