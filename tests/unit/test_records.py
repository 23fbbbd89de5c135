import base64
import datetime as dt

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import items
from worker import shapes
from worker.decode import decode, decode_mapping
from worker.errors import RecordError
from worker.records import EventName, RawRecord, ViewType

T0 = 1_763_780_400  # 2025-11-22T03:00:00Z


def _decode_shape(canon, shape):
    rendered = shapes.render(canon, shape)
    if shape == "boto3":
        return decode(RawRecord(rendered, "mem:1", "shardId-1"))
    return decode(RawRecord(orjson.dumps(rendered), "mem:1", "shardId-1"))


@settings(max_examples=150, deadline=None)
@given(old=items, new=items)
def test_random_items_round_trip_through_every_shape(old, new):
    canon = shapes.build("MODIFY", {"pk": "k"}, old=old, new=new, sequence=10**30 + 7, created=T0)
    for shape in shapes.SHAPES:
        rec = _decode_shape(canon, shape)
        assert rec.old_image == old, shape
        assert rec.new_image == new, shape
        assert rec.keys == {"pk": "k"}
        assert rec.sequence == 10**30 + 7
        assert rec.created_at == dt.datetime.fromtimestamp(T0, dt.UTC), shape


@settings(max_examples=40, deadline=None)
@given(old=items, changes=items, dropped=st.integers(0, 3), new_first=st.booleans())
def test_images_read_in_either_order_share_only_unchanged_attributes(old, changes, dropped, new_first):
    new = {**{k: v for k, v in list(old.items())[dropped:]}, **changes}  # mostly the old item
    canon = shapes.build("MODIFY", {"pk": "k"}, old=old, new=new, sequence=10**30 + 7, created=T0)
    rec = _decode_shape(canon, "adapter")
    first, second = ("new_image", "old_image") if new_first else ("old_image", "new_image")
    a, b = getattr(rec, first), getattr(rec, second)
    assert (rec.old_image, rec.new_image) == (old, new)
    wire = canon["dynamodb"]
    shared = set(a) & set(b)
    assert shared >= set(old) - set(changes) - set(list(old)[:dropped])
    for name in shared:
        if orjson.dumps(wire["OldImage"][name]) == orjson.dumps(wire["NewImage"][name]):
            assert a[name] is b[name]  # decoded once, shared
        elif isinstance(a[name], dict | list):
            assert a[name] is not b[name]


def test_a_bad_changed_attribute_read_after_the_other_image_names_its_field():
    canon = shapes.build("MODIFY", {"id": "a"}, old={"id": "a", "n": 1}, new={"id": "a", "n": 2}, sequence=10**20)
    canon["dynamodb"]["NewImage"]["n"] = {"N": "two"}
    rec = decode(RawRecord(orjson.dumps(canon), "f.jsonl:3", "shardId-1"))
    assert rec.old_image == {"id": "a", "n": 1}
    with pytest.raises(RecordError) as err:
        _ = rec.new_image
    assert err.value.where == "shardId-1/100000000000000000000"
    assert err.value.field == "dynamodb.NewImage.n"


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_every_shape_gives_the_same_fields(shape):
    canon = shapes.build(
        "REMOVE", {"id": "a"}, old={"id": "a", "b": b"\x01"}, sequence="4" * 40, created=T0, ttl=True, event_id="e-1"
    )
    rec = _decode_shape(canon, shape)
    assert rec.event_name is EventName.REMOVE
    assert rec.sequence_number == "4" * 40
    assert rec.event_id == "e-1"
    assert rec.view_type is ViewType.NEW_AND_OLD_IMAGES
    assert rec.ttl_delete is True
    assert rec.new_image is None
    assert rec.old_image == {"id": "a", "b": b"\x01"}
    assert rec.shard_id == "shardId-1"
    assert rec.location == f"shardId-1/{'4' * 40}"


def test_adapter_json_millis_base64_and_empty_images():
    adapter = {
        "eventName": "INSERT",
        "dynamodb": {
            "ApproximateCreationDateTime": 1763780400000,
            "Keys": {"id": {"B": "AAE="}},
            "NewImage": {"id": {"B": "AAE="}, "tags": {"BS": ["AQ=="]}},
            "OldImage": {},
            "SequenceNumber": "100000000000000000001",
            "SizeBytes": 12,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "userIdentity": None,
    }
    multilang = {"data": base64.b64encode(orjson.dumps(adapter)).decode(), "sequenceNumber": "1"}
    rec = decode(RawRecord(orjson.dumps(multilang), "shardId-9/1", "shardId-9"))
    assert rec.created_at == dt.datetime(2025, 11, 22, 3, 0, tzinfo=dt.UTC)
    assert rec.keys == {"id": b"\x00\x01"}
    assert rec.new_image == {"id": b"\x00\x01", "tags": frozenset({b"\x01"})}
    assert rec.old_image is None
    assert rec.ttl_delete is False


def test_lambda_event_gives_table_name_and_seconds():
    event = {"Records": [shapes.render(shapes.build("INSERT", {"id": "a"}, new={"id": "a"}, created=T0), "lambda")]}
    (raw,) = event["Records"]
    rec = decode_mapping(raw, where="event.json:1")
    assert rec.table == "Orders"
    assert rec.created_at.timestamp() == T0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("dynamodb"), "dynamodb"),
        (lambda r: r.__setitem__("eventName", "UPSERT"), "eventName"),
        (lambda r: r["dynamodb"].__setitem__("SequenceNumber", 12), "dynamodb.SequenceNumber"),
        (lambda r: r["dynamodb"].pop("Keys"), "dynamodb.Keys"),
        (lambda r: r["dynamodb"].__setitem__("NewImage", []), "dynamodb.NewImage"),
        (lambda r: r["dynamodb"].__setitem__("ApproximateCreationDateTime", "yesterday"), None),
        (lambda r: r["dynamodb"].__setitem__("StreamViewType", "ALL"), "dynamodb.StreamViewType"),
    ],
)
def test_malformed_records_name_place_and_field(mutate, field):
    canon = shapes.build("INSERT", {"id": "a"}, new={"id": "a"}, sequence=123456789012345678901)
    mutate(canon)
    with pytest.raises(RecordError) as err:
        decode_mapping(canon, where="orders.jsonl:7")
    assert "orders.jsonl:7" in str(err.value)
    if field:
        assert err.value.field == field
    assert err.value.payload is canon


def test_bad_attribute_is_found_lazily_with_its_place():
    canon = shapes.build("INSERT", {"id": "a"}, new={"id": "a"}, sequence=123456789012345678901)
    canon["dynamodb"]["NewImage"]["total"] = {"N": "ten"}
    rec = decode_mapping(canon, where="f.jsonl:3", shard_id="shardId-1")
    with pytest.raises(RecordError) as err:
        _ = rec.new_image
    assert err.value.where == "shardId-1/123456789012345678901"
    assert err.value.field == "dynamodb.NewImage.total"


def test_invalid_json_names_the_place():
    with pytest.raises(RecordError) as err:
        decode(RawRecord(b"{not json", "f.jsonl:4"))
    assert err.value.where == "f.jsonl:4"
    assert "invalid JSON" in err.value.reason


def test_original_json_round_trips_boto3_values():
    canon = shapes.build("INSERT", {"id": "a"}, new={"id": "a", "b": b"\xff"}, created=T0)
    rec = decode(RawRecord(shapes.render(canon, "boto3"), "mem"))
    again = decode(RawRecord(rec.original_json(), "mem"))
    assert again.new_image == rec.new_image
    assert again.created_at == rec.created_at
