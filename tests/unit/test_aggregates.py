"""Aggregates: definitions, contributions, deltas from the diff, recomputation (pure, no I/O)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from worker.canonical import fits_dynamodb, number_text
from worker.config import AggregateSection, load
from worker.decode import decode_mapping
from worker.diff import diff
from worker.errors import ConfigError, RecordError
from worker.shapes import build
from worker.sinks.aggregates.sink import LOCAL_SHARD, AggregatesSink
from worker.sinks.aggregates.spec import (
    Aggregate,
    compile_aggregate,
    deltas,
    recompute,
)
from worker.sinks.aggregates.values import group_key, parse_path, same_value


def agg(**kw: Any) -> Aggregate:
    base: dict[str, Any] = {
        "name": "by_status",
        "table": "Stats",
        "group_by": ["status"],
        "metrics": {"orders": "count", "revenue": "sum(total)"},
    }
    base.update(kw)
    return compile_aggregate(AggregateSection(**base))


def order(status: str = "pending", total: Any = D("10.50"), **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"id": "o1", "status": status, "channel": "web"}
    if total is not None:
        item["total"] = total
    item.update(extra)
    return item


# -- paths and values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("status", ("status",)),
        ("ship.city", ("ship", "city")),
        ("lines[2].qty", ("lines", 2, "qty")),
        ("a[0][1]", ("a", 0, 1)),
    ],
)
def test_parse_path(text: str, path: tuple[Any, ...]) -> None:
    assert parse_path(text) == path


@pytest.mark.parametrize("text", ["", ".a", "a.", "a..b", "[0]", "a.[0]", "a]"])
def test_parse_path_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_path(text, "aggregates[0].group_by[0]")


def test_values_compare_like_dynamodb() -> None:
    assert same_value(D("1.0"), D("1"))
    assert not same_value(True, D(1))
    assert not same_value("1", D(1))
    assert same_value({"a": [D("2.50")]}, {"a": [D("2.5")]})


def test_number_text_is_canonical_and_exact() -> None:
    assert number_text(D("12.50")) == "12.5"
    assert number_text(D("1E+3")) == "1000"
    assert number_text(D("-0.000")) == "0"
    long = "1234567890123456789012345678901234567.8"  # 38 digits: more than the default context keeps
    assert number_text(D(long)) == long
    assert fits_dynamodb(D(long))
    assert not fits_dynamodb(D(long + "1"))


def test_group_key_is_typed_and_deterministic() -> None:
    assert group_key(["paid", D("12.50")]) == '["paid",12.5]'
    assert group_key([None]) == "[null]"
    assert group_key(["1"]) != group_key([D(1)])
    assert group_key([True]) != group_key([D(1)])
    assert group_key([{"b": D(1), "a": "x"}]) == group_key([{"a": "x", "b": D("1.0")}])
    assert group_key([frozenset({"b", "a"})]) == '[{"SET":["a","b"]}]'


# -- where, groups, sums ------------------------------------------------------------------------


def test_where_equality_presence_and_one_of() -> None:
    a = agg(where={"channel": "web", "coupon": {"exists": True}, "status": {"in": ["paid", "shipped"]}})
    assert a.contribution(order("paid", coupon="X")) is not None
    assert a.contribution(order("paid")) is None  # no coupon
    assert a.contribution(order("pending", coupon="X")) is None
    assert a.contribution(order("paid", coupon="X", channel="app")) is None
    absent = agg(where={"coupon": {"exists": False}})
    assert absent.contribution(order()) is not None
    assert absent.contribution(order(coupon="X")) is None


def test_where_numbers_by_value_and_types_strictly() -> None:
    a = agg(where={"priority": 1})
    assert a.contribution(order(priority=D("1.0"))) is not None
    assert a.contribution(order(priority="1")) is None
    assert a.contribution(order(priority=True)) is None
    flagged = agg(where={"gift": True})
    assert flagged.contribution(order(gift=True)) is not None
    assert flagged.contribution(order(gift=D(1))) is None


def test_where_nested_paths_as_tables_or_dotted_keys() -> None:
    nested = agg(where={"ship": {"city": "Paris"}})
    dotted = agg(where={"ship.city": "Paris"})
    for a in (nested, dotted):
        assert a.contribution(order(ship={"city": "Paris"})) is not None
        assert a.contribution(order(ship={"city": "Lyon"})) is None
        assert a.contribution(order()) is None


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ({"status": {"exists": True, "like": "p%"}}, "aggregates.where.status"),
        ({"status": {"exists": "yes"}}, "aggregates.where.status.exists"),
        ({"status": {"in": []}}, "aggregates.where.status.in"),
        ({"status": {"exists": False, "eq": "x"}}, "aggregates.where.status"),
    ],
)
def test_where_errors_name_the_key(where: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        agg(where=where)
    assert info.value.key == key


def test_nested_group_and_missing_group_rules() -> None:
    skip = agg(group_by=["ship.city"])
    null = agg(group_by=["ship.city"], missing_group="null")
    paris = order(ship={"city": "Paris"})
    c = skip.contribution(paris)
    assert c is not None and c.group == ("Paris",) and c.key == '["Paris"]'
    assert skip.contribution(order()) is None
    n = null.contribution(order())
    assert n is not None and n.group == (None,) and n.key == "[null]"
    # An attribute present with the NULL value is a null group under both rules.
    explicit = skip.contribution(order(ship={"city": None}))
    assert explicit is not None and explicit.group == (None,)


def test_sums_absent_null_and_non_numeric() -> None:
    a = agg()
    absent = a.contribution(order(total=None))
    null = a.contribution(order() | {"total": None})
    for c in (absent, null):
        assert c is not None and c.vector == (D(1), D(0)) and c.faults == ()
    bad = a.contribution(order(total="12"))
    assert bad is not None and bad.vector == (D(1), D(0))
    assert [(f.path, f.reason) for f in bad.faults] == [("total", "sum(total) over a non-number (S) counted as 0")]


def test_groups_too_long_for_a_sort_key_count_nowhere_and_are_reported() -> None:
    a = agg()
    long = a.contribution(order("x" * 1100))
    assert long is not None and long.vector == (D(0), D(0))
    assert [f.path for f in long.faults] == ["status"] and "1024" in long.faults[0].reason
    assert recompute(a, [order("x" * 1100), order("paid")]) == [
        {"group": {"status": "paid"}, "metrics": {"orders": 1, "revenue": "10.5"}}
    ]
    moved, faults = deltas([a], order("x" * 1100), order("paid"))
    assert [(d.key, d.vector) for d in moved] == [('["paid"]', (D(1), D("10.50")))] and faults == []


def test_reserved_and_malformed_metrics() -> None:
    with pytest.raises(ConfigError) as info:
        agg(metrics={"hwm": "count"})
    assert info.value.key == "aggregates.metrics.hwm"
    with pytest.raises(ConfigError):
        agg(metrics={"count": "sum(total)"})
    with pytest.raises(ConfigError):
        agg(metrics={"x": "avg(total)"})
    assert [m.name for m in agg(metrics={"count": "count"}).metrics] == ["count"]


def test_config_file_compiles_aggregates(tmp_path: Any) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(
        """
[[aggregates]]
name = "orders_by_status"
table = "OrderStats"
group_by = ["status", "ship.city"]
where = { channel = "web", "ship.country" = { in = ["FR", "BE"] } }
metrics = { orders = "count", revenue = "sum(total)" }
missing_group = "null"
"""
    )
    cfg = load(path, env={})
    assert cfg.aggregates[0].missing_group == "null"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[aggregates]]\nname = "x"\ntable = "T"\ngroup_by = ["a..b"]\nmetrics = { n = "count" }\n')
    with pytest.raises(ConfigError) as info:
        load(bad, env={})
    assert info.value.key == "aggregates[0].group_by[0]"


# -- deltas ---------------------------------------------------------------------------------------


def test_deltas_insert_modify_remove() -> None:
    a = [agg()]
    ins, _ = deltas(a, None, order("pending"))
    assert [(d.key, d.vector) for d in ins] == [('["pending"]', (D(1), D("10.50")))]
    moved, _ = deltas(a, order("pending"), order("paid"))
    assert sorted((d.key, d.vector) for d in moved) == [
        ('["paid"]', (D(1), D("10.50"))),
        ('["pending"]', (D(-1), D("-10.50"))),
    ]
    repriced, _ = deltas(a, order("paid", D("10.50")), order("paid", D("12")))
    assert [(d.key, d.vector) for d in repriced] == [('["paid"]', (D(0), D("1.50")))]
    removed, _ = deltas(a, order("paid"), None)
    assert [(d.key, d.vector) for d in removed] == [('["paid"]', (D(-1), D("-10.50")))]
    unrelated, _ = deltas(a, order("paid"), order("paid", note="x"))
    assert unrelated == []


def test_deltas_apply_where_to_each_image() -> None:
    a = [agg(where={"channel": "web"})]
    left, _ = deltas(a, order("paid"), order("paid", channel="app"))
    assert [(d.key, d.vector) for d in left] == [('["paid"]', (D(-1), D("-10.50")))]
    joined, _ = deltas(a, order("paid", channel="app"), order("paid"))
    assert [(d.key, d.vector) for d in joined] == [('["paid"]', (D(1), D("10.50")))]


def test_deltas_report_faults_of_the_new_image_only() -> None:
    a = [agg()]
    _, fixed = deltas(a, order(total="n/a"), order(total=D(3)))
    assert fixed == []
    d, broken = deltas(a, order(total=D(3)), order(total="n/a"))
    assert [(name, f.path) for name, f in broken] == [("by_status", "total")]
    assert [(x.key, x.vector) for x in d] == [('["pending"]', (D(0), D(-3)))]


def test_deltas_are_exact_beyond_the_default_context() -> None:
    a = [agg()]
    big = D("12345678901234567890123456789012345.67")
    d, _ = deltas(a, order(total=big), order(total=D("12345678901234567890123456789012345.68")))
    assert d[0].vector == (D(0), D("0.01"))


# -- the sink's add: buffers only ------------------------------------------------------------------


def change(
    event: str, seq: int, old: dict[str, Any] | None = None, new: dict[str, Any] | None = None, **kw: Any
) -> Any:
    shard = kw.pop("shard", None)
    rec = build(event, {"id": "o1"}, old=old, new=new, sequence=seq, **kw)
    return diff(decode_mapping(rec, where=f"test:{seq}", shard_id=shard))


def test_add_does_no_io_and_parks_non_numeric_after_buffering() -> None:
    sink = AggregatesSink(None, [agg()])  # no client: any I/O in add would fail
    sink.add(change("INSERT", 101, new=order()))
    with pytest.raises(RecordError) as info:
        sink.add(change("MODIFY", 102, old=order(), new=order(total="n/a")))
    assert info.value.field == "dynamodb.NewImage.total"
    assert info.value.sink == "aggregates"
    (row,) = sink.pending
    assert row.entries == {(LOCAL_SHARD, 101): (D(1), D("10.50")), (LOCAL_SHARD, 102): (D(0), D("-10.50"))}


def test_add_decides_from_the_kind_and_ignores_noops_and_duplicates() -> None:
    sink = AggregatesSink(None, [agg()])
    sink.add(change("MODIFY", 101, old=order(), new=order()))  # no-op
    assert not sink.pending
    # An INSERT with an (unexpected) old image only adds the new one.
    sink.add(change("INSERT", 102, old=order("paid"), new=order()))
    sink.add(change("INSERT", 102, old=order("paid"), new=order()))  # the same record again
    (row,) = sink.pending
    assert list(row.entries.values()) == [(D(1), D("10.50"))]
    ttl = change("REMOVE", 103, old=order(), ttl=True)
    sink.add(ttl)
    assert list(row.entries.values())[-1] == (D(-1), D("-10.50"))


def test_add_needs_both_images() -> None:
    sink = AggregatesSink(None, [agg()])
    with pytest.raises(RecordError) as info:
        sink.add(change("MODIFY", 101, new=order(), view="NEW_IMAGE"))
    assert info.value.field == "dynamodb.OldImage"


# -- recompute --------------------------------------------------------------------------------------


def test_recompute_shape_and_order() -> None:
    items = [
        order("paid", D("10.50"), id="1"),
        order("paid", D("2.25"), id="2"),
        order("pending", D(3), id="3"),
        order("paid", "oops", id="4"),
        order("x", D(1), id="5") | {"status": None},
    ]
    assert recompute(
        AggregateSection("by_status", "Stats", ["status"], {"orders": "count", "revenue": "sum(total)"}), items
    ) == [
        {"group": {"status": "paid"}, "metrics": {"orders": 3, "revenue": "12.75"}},
        {"group": {"status": "pending"}, "metrics": {"orders": 1, "revenue": "3"}},
        {"group": {"status": None}, "metrics": {"orders": 1, "revenue": "1"}},
    ]
