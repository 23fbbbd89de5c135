"""The benchmark's workload has the stated shape, and every stack computes the same changes.

Speed is never asserted here (only ``bench/`` measures it); these tests keep the
comparison honest: same input, same answers.
"""

import base64
import gc
import re
import weakref
from collections import Counter
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import __main__ as dispatcher
from bench.pipeline import changes_a, changes_b, changes_c, changes_worker, held, measure_rss
from bench.workload import canonical_records, generate
from tests.strategies import items, names, values
from worker import shapes
from worker.decode import decode, decode_mapping
from worker.diff import diff, diff_items
from worker.records import RawRecord
from worker.sources.kcl import GC_THRESHOLDS

SAMPLE = 300


@pytest.fixture(scope="module")
def work():
    return generate(SAMPLE, seed=7)


def top(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def test_same_seed_same_bytes_and_the_mix_is_exact(work):
    again = generate(SAMPLE, seed=7)
    assert again.adapter == work.adapter
    assert generate(SAMPLE, seed=8).adapter != work.adapter
    assert Counter(work.events) == {"INSERT": 60, "MODIFY": 210, "REMOVE": 30}


def test_items_are_about_1kb_with_16_attributes_of_every_kind():
    sizes, kinds = [], set()
    for canon in canonical_records(SAMPLE, seed=7):
        record = decode_mapping(canon, where="bench")
        item = record.new_image or record.old_image
        assert len(item) == 16
        sizes.append(canon["dynamodb"]["SizeBytes"])
        for value in item.values():
            kinds.add(type(value).__name__)
            if isinstance(value, frozenset):
                kinds.add("set of " + type(next(iter(value))).__name__)
        assert isinstance(item["customer"]["address"], dict)  # a map in a map
        assert all(isinstance(line, dict) for line in item["lines"])  # a list of maps
    assert 950 <= sum(sizes) / len(sizes) <= 1150
    assert max(sizes) < 1400
    assert {"str", "Decimal", "bool", "NoneType", "bytes", "dict", "list", "set of str", "set of Decimal"} <= kinds


def test_every_modify_changes_one_to_three_attributes_some_nested(work):
    nested = 0
    for change, event in zip(changes_worker(work.adapter_records()), work.events, strict=True):
        if event != "MODIFY":
            continue
        names = {top(p) for p in change.changed}
        assert "version" in names  # written with every change, as applications do (with updated_at)
        assert 1 <= len(names - {"version", "updated_at"}) <= 3
        nested += any("." in p or "[" in p for p in change.changed)
    assert nested > 50


def test_adapter_and_multilang_renderings_carry_the_same_record(work):
    for text, m in zip(work.adapter, work.multilang, strict=True):
        assert base64.b64decode(m["data"]) == text
        assert m["sequenceNumber"] == orjson.loads(text)["dynamodb"]["SequenceNumber"]
    batches = list(work.multilang_batches(128))
    assert [len(b) for b in batches] == [128, 128, 44]
    assert [r.payload for b in batches for r in b] == work.multilang


def test_baselines_find_the_same_changes_as_the_worker(work):
    worker = [c.changed for c in changes_worker(work.adapter_records())]
    a = list(changes_a(work.adapter))
    b = list(changes_b(work.adapter))
    c = list(changes_c(work.adapter))
    assert len(worker) == len(a) == len(b) == len(c) == SAMPLE
    for paths, pa, pb, pc in zip(worker, a, b, c, strict=True):
        names = {top(p) for p in paths}
        assert set(pa) == names
        assert set(pb) == names
        assert list(pc) == list(paths)  # the same walk, eagerly: the same paths in the same order
    changed_items = sum(1 for paths in worker if paths)
    assert changed_items == sum(1 for x in a if x) == sum(1 for x in b if x) == sum(1 for x in c if x) == SAMPLE


def test_the_records_fast_path_decodes_the_workload_like_the_general_path(work):
    for text, m in zip(work.adapter, work.multilang, strict=True):
        slow = decode_mapping(orjson.loads(text), where="w", shard_id="s")
        for fast in (decode(RawRecord(text, "w", "s")), decode(RawRecord(m, "w", "s"))):
            assert fast._text is not None  # the fast path was taken
            # select() on a record not yet decoded, from the raw scan: the images' own attributes
            names = ("total", "customer", "status", "no-such-attribute")
            expect = tuple(
                None if image is None else {k: image[k] for k in names if k in image}
                for image in (slow.old_image, slow.new_image)
            )
            assert fast.select(names) == expect
            assert decode_mapping(orjson.loads(text), where="w", shard_id="s").select(names) == expect  # no text
            assert isinstance(expect[1] and expect[1]["total"], Decimal | None)
            for field in ("event_name", "sequence_number", "event_id", "created_at", "size_bytes", "view_type"):
                assert getattr(fast, field) == getattr(slow, field), field
            assert fast.keys == slow.keys
            assert fast.old_image == slow.old_image
            assert fast.new_image == slow.new_image
            assert diff(fast).changed == diff(slow).changed
            assert fast.original() == slow.original()
            assert fast.select(names) == slow.select(names) == expect  # from the decoded images


@settings(max_examples=200, deadline=None)
@given(old=items, patch=st.dictionaries(names, values, max_size=3), drop=st.sets(names, max_size=2), other=items)
def test_the_raw_diff_finds_what_a_walk_of_the_decoded_items_finds(old, patch, drop, other):
    """The fast path (raw compare, raw walk, shortcuts) against the plain walk of decoded items."""
    new = {k: v for k, v in {**old, **patch}.items() if k not in drop or k == "pk"}
    nested = {  # changes inside maps and lists, the rest equal
        k: {**v, **patch} if isinstance(v, dict) else [*v, *patch.values()] if isinstance(v, list) else v
        for k, v in old.items()
    }
    for before, after in ((old, new), (old, nested), (old, other), (new, new)):
        canon = shapes.build("MODIFY", {"pk": "k"}, old=before, new=after)
        expected = diff_items(before, after)
        assert list(diff(decode_mapping(canon, where="t")).changed) == expected
        text = orjson.dumps(shapes.render(canon, "adapter"))
        assert list(diff(decode(RawRecord(text, "t"))).changed) == expected


def test_the_benchmark_runs_and_prints_its_table(capsys):
    before = gc.get_threshold()
    assert dispatcher.main(["pipeline", "--records", "60", "--repeats", "1", "--no-rss"]) == 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0  # the shard's settings were undone
    out = capsys.readouterr().out
    assert (
        f"garbage collector: a shard process's (worker.sources.kcl.settle_heap), thresholds {GC_THRESHOLDS[0]}/" in out
    )
    for row in (
        "(a) json + boto3",
        "(b) Powertools",
        "(c) orjson",
        "worker decode",
        "worker pipeline (multilang",
        "worker pipeline, all sinks",
    ):
        assert row in out
    assert out.count("target: ") == 6
    assert "target: decoding key and images on demand <= eager decoding (c), both holding their batch: " in out
    assert "(c) decode only, each batch held until the next" in out
    assert dispatcher.main(["no-such-bench"]) == 2


def test_resident_memory_is_read_from_fresh_processes():
    rss = measure_rss(generate(50, seed=1), 20)
    assert 1_000 < rss["python_kb"] < rss["import_kb"] <= rss["pipeline_kb"] < 1_000_000


def test_the_held_baseline_keeps_each_batch_alive_until_it_is_complete():
    class Item:
        pass

    alive: weakref.WeakValueDictionary[int, Item] = weakref.WeakValueDictionary()
    failures: list[str] = []

    def items(n: int, batch: int):
        for k in range(n):
            gc.collect()
            earlier = set(alive)
            current = set(range(k - k % batch, k))  # the items of the batch being filled
            # the batch being filled is alive; nothing older is, but the item just handed over
            if not current <= earlier <= current | {k - 1}:
                failures.append(f"item {k}: alive {sorted(earlier)}")
            item = Item()
            alive[k] = item
            yield item
            del item

    assert held(items(10, 3), 3) == 10
    assert failures == []
