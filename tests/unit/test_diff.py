from decimal import Decimal

import pytest

from worker import shapes
from worker.decode import decode_mapping
from worker.diff import ChangeKind, diff, diff_items


def change(event, old=None, new=None, ttl=False):
    canon = shapes.build(event, {"id": "a"}, old=old, new=new, ttl=ttl)
    return diff(decode_mapping(canon, where="t:1"))


@pytest.mark.parametrize(
    ("old", "new", "paths"),
    [
        ({"a": "x"}, {"a": "y"}, ["a"]),
        ({"ship": {"city": "A", "zip": "1"}}, {"ship": {"city": "B", "zip": "1"}}, ["ship.city"]),
        ({"lines": [{"qty": 1}, {"qty": 2}]}, {"lines": [{"qty": 1}, {"qty": 3}]}, ["lines[1].qty"]),
        ({"lines": [1]}, {"lines": [1, 2, 3]}, ["lines[1]", "lines[2]"]),
        ({"lines": [1, 2]}, {"lines": [1]}, ["lines[1]"]),
        ({"m": {"a": 1}}, {"m": {"b": 1}}, ["m.b", "m.a"]),
        ({"a": 1}, {"a": 1, "b": 2}, ["b"]),
        ({"a": 1, "b": 2}, {"a": 1}, ["b"]),
        ({"tags": {"x", "y"}}, {"tags": {"y", "x", "z"}}, ["tags"]),
        ({"flag": True}, {"flag": Decimal(1)}, ["flag"]),
        ({"v": b"1"}, {"v": "1"}, ["v"]),
        ({"v": None}, {"v": False}, ["v"]),
    ],
)
def test_modify_paths(old, new, paths):
    c = change("MODIFY", {"id": "a", **old}, {"id": "a", **new})
    assert c.kind is ChangeKind.MODIFY
    assert sorted(c.changed) == sorted(paths)
    assert not c.noop
    assert sorted(diff_items({"id": "a", **old}, {"id": "a", **new})) == sorted(paths)


def test_sets_compare_as_sets_whatever_the_wire_order():
    canon = shapes.build("MODIFY", {"id": "a"}, old={"id": "a", "t": {"x", "y"}}, new={"id": "a", "t": {"x", "y"}})
    canon["dynamodb"]["NewImage"]["t"]["SS"].reverse()
    c = diff(decode_mapping(canon, where="t:1"))
    assert c.changed == ()
    assert c.noop


def test_numbers_compare_by_value():
    canon = shapes.build("MODIFY", {"id": "a"}, old={"id": "a", "n": Decimal("1")}, new={"id": "a", "n": Decimal("1")})
    canon["dynamodb"]["NewImage"]["n"]["N"] = "1.0"
    assert diff(decode_mapping(canon, where="t:1")).noop


def test_identical_images_are_a_noop():
    item = {"id": "a", "ship": {"city": "X"}, "lines": [{"q": 1}]}
    c = change("MODIFY", item, item)
    assert c.noop and c.changed == ()


def test_insert_remove_and_ttl():
    ins = change("INSERT", new={"id": "a", "b": 1})
    assert ins.kind is ChangeKind.INSERT and sorted(ins.changed) == ["b", "id"] and ins.old is None
    rem = change("REMOVE", old={"id": "a"})
    assert rem.kind is ChangeKind.REMOVE and rem.deleted and rem.new is None
    ttl = change("REMOVE", old={"id": "a"}, ttl=True)
    assert ttl.kind is ChangeKind.TTL_EXPIRE and ttl.deleted
    assert ttl.key == {"id": "a"}


def test_diff_decodes_only_changed_attributes():
    canon = shapes.build("MODIFY", {"id": "a"}, old={"id": "a", "x": 1, "bad": 1}, new={"id": "a", "x": 2, "bad": 1})
    # An unchanged attribute that could not even be decoded is never touched.
    canon["dynamodb"]["OldImage"]["bad"] = canon["dynamodb"]["NewImage"]["bad"] = {"N": "oops"}
    assert diff(decode_mapping(canon, where="t:1")).changed == ("x",)
