"""The search sink against osmem-server (a fresh clone per test): ordering, deletes, errors, setup."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import orjson
import pytest
import requests

from tests.functional.search_faults import FaultyClient
from worker.config import Config, SearchSection
from worker.emulators import free_port
from worker.errors import RetryableError
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.shapes import build
from worker.sinks import search
from worker.sinks.search import SearchSink
from worker.sinks.search.client import RequestTooLarge, SearchClient, http_settings
from worker.sinks.search.docs import doc_id, seq_text
from worker.testing import MemoryDeadLetters

S0 = 10**21  # a 22-digit sequence number


def rec(event: str, pk: str, seq: int, *, old: dict | None = None, new: dict | None = None, **kw: Any) -> dict:
    return build(event, {"pk": pk}, old=old, new=new, sequence=seq, **kw)


def put(pk: str, seq: int, **attrs: Any) -> dict:
    return rec("INSERT", pk, seq, new={"pk": pk, **attrs})


def modify(pk: str, seq: int, **attrs: Any) -> dict:
    return rec("MODIFY", pk, seq, old={"pk": pk, "v": Decimal(-1)}, new={"pk": pk, **attrs})


def remove(pk: str, seq: int, *, ttl: bool = False, **old: Any) -> dict:
    return rec("REMOVE", pk, seq, old={"pk": pk, **old}, ttl=ttl)


class Harness:
    def __init__(self, url: str, client_cls: type[SearchClient] = FaultyClient, **settings: Any) -> None:
        self.section = SearchSection(url=url, **settings)
        base, settings = http_settings(self.section, "us-east-1")
        self.client = client_cls(base, settings)
        self.sink = SearchSink(self.client, self.section)
        self.deadletters = MemoryDeadLetters()
        retry = RetryPolicy(attempts=10, base=0.0, cap=0.0, sleep=no_sleep)
        self.pipeline = Pipeline([self.sink], self.deadletters, retry=retry)

    def process(self, *records: dict) -> None:
        self.pipeline.process([RawRecord(r, f"mem:{i}", "shardId-1") for i, r in enumerate(records)])

    def docs(self) -> dict[str, Any]:
        return self.sink.report()[self.section.index]

    def raw(self, doc: str) -> dict[str, Any]:
        resp = requests.post(f"{self.section.url}/{self.section.index}/_mget", json={"ids": [doc]}, timeout=10)
        return resp.json()["docs"][0]


def test_insert_modify_remove_keep_the_index_equal_to_the_table(osmem_url):
    h = Harness(osmem_url, live_alias="orders-live")
    h.process(put("a", S0 + 1, n=Decimal("1.50")), put("b", S0 + 2, n=Decimal(2)))
    h.process(modify("a", S0 + 3, n=Decimal(3), tags=frozenset({"y", "x"})), remove("b", S0 + 4, n=Decimal(2)))
    assert h.docs() == {"a": {"pk": "a", "n": 3, "tags": ["x", "y"]}}
    tomb = h.raw("b")
    assert tomb["found"] and tomb["_source"] == {
        "_stream": {"seq": seq_text(S0 + 4), "deleted": True, "expired": False}
    }
    live = requests.post(f"{osmem_url}/orders-live/_search", json={"query": {"match_all": {}}}, timeout=10).json()
    assert [hit["_id"] for hit in live["hits"]["hits"]] == ["a"]


def test_a_stale_write_after_a_delete_does_not_resurrect_the_item(osmem_url):
    h = Harness(osmem_url)
    h.process(put("a", S0 + 1, v=Decimal(1)), modify("a", S0 + 2, v=Decimal(2)), remove("a", S0 + 3))
    h.process(put("a", S0 + 1, v=Decimal(1)))  # redelivered long after the delete
    h.process(modify("a", S0 + 2, v=Decimal(2)))
    assert h.docs() == {}
    assert h.sink.stats["stale"] == 2


def test_the_newer_sequence_number_wins_across_digit_lengths_and_delivery_orders(osmem_url):
    older, newer = 10**21 - 1, 10**21  # 21 and 22 digits: as text "999..." > "1000..."
    h = Harness(osmem_url)
    h.process(put("a", newer, v="new"))
    h.process(put("a", older, v="old"))
    h.process(put("b", older, v="old"))
    h.process(put("b", newer, v="new"))
    assert h.docs() == {"a": {"pk": "a", "v": "new"}, "b": {"pk": "b", "v": "new"}}


def test_only_the_newest_change_per_document_is_sent_within_a_flush(osmem_url):
    h = Harness(osmem_url)
    h.process(
        put("a", S0 + 1, v=Decimal(1)),
        modify("a", S0 + 3, v=Decimal(3)),
        modify("a", S0 + 2, v=Decimal(2)),
        put("b", S0 + 4),
    )
    assert h.client.calls["bulk"] == 1
    assert h.sink.stats["written"] == 2
    assert h.docs()["a"] == {"pk": "a", "v": 3}


def test_identical_reput_is_skipped_without_a_request(osmem_url):
    h = Harness(osmem_url)
    h.process(put("a", S0 + 1, v=Decimal(1)))
    calls = sum(h.client.calls.values())
    h.process(rec("MODIFY", "a", S0 + 2, old={"pk": "a", "v": Decimal(1)}, new={"pk": "a", "v": Decimal("1.0")}))
    assert sum(h.client.calls.values()) == calls
    assert h.sink.stats["skipped-noop"] == 1


@pytest.mark.parametrize(("settings", "bulks"), [({"bulk_max_actions": 3}, 3), ({"bulk_max_bytes": 1}, 7), ({}, 1)])
def test_bulk_requests_are_bounded_by_count_and_bytes(osmem_url, settings, bulks):
    h = Harness(osmem_url, **settings)
    h.process(*[put(f"k{i}", S0 + i, blob="x" * 100) for i in range(7)])
    assert h.client.calls["bulk"] == bulks
    assert len(h.docs()) == 7


def test_a_mapping_error_parks_that_record_with_the_opensearch_error(osmem_url, tmp_path):
    (tmp_path / "orders.json").write_bytes(orjson.dumps({"mappings": {"properties": {"qty": {"type": "long"}}}}))
    cfg = Config(search=SearchSection(url=osmem_url, template=str(tmp_path / "orders.json")))
    sink = search.create(cfg, provision=True)
    dead = MemoryDeadLetters()
    pipeline = Pipeline([sink], dead)
    bad = put("bad", S0 + 2, qty="many")
    position = pipeline.process([RawRecord(put("good", S0 + 1, qty=Decimal(3)), "f:1"), RawRecord(bad, "f:2")])
    assert position.sequences["f:2"] == str(S0 + 2)  # the batch went on and is checkpointable
    assert list(sink.report()["orders"]) == ["good"]
    (err,) = dead.parked
    assert err.sink == "search"
    assert err.payload == bad
    assert err.where == "f:2"
    assert "mapper_parsing_exception" in err.reason


def test_a_record_without_a_new_image_or_with_the_metadata_name_is_parked(osmem_url):
    h = Harness(osmem_url)
    h.process(rec("INSERT", "k", S0 + 1, view="KEYS_ONLY"), put("m", S0 + 2, _stream="mine"), put("ok", S0 + 3))
    assert sorted(e.field or "" for e in h.deadletters.parked) == ["dynamodb.NewImage", "dynamodb.NewImage._stream"]
    assert list(h.docs()) == ["ok"]


def test_transient_failures_keep_the_buffer_and_resend_only_what_failed(osmem_url):
    h = Harness(osmem_url)
    for i in range(6):
        h.sink.add(_change(put(f"k{i}", S0 + i, v=Decimal(i))))
    h.client.faults.extend(["items"])
    h.client.rng.seed(3)
    with pytest.raises(RetryableError):
        h.sink.flush()
    kept = set(h.sink.pending)
    assert 0 < len(kept) < 6  # some were written, the others are still buffered
    unwritten = {d for d in kept if not h.raw(d)["found"]}  # refused with 429; the 503s were applied
    assert unwritten
    h.client.faults.extend(["retry"])
    with pytest.raises(RetryableError):
        h.sink.flush()
    assert set(h.sink.pending) == unwritten  # the re-read found the applied ones done
    assert h.sink.flush() == []
    assert not h.sink.pending
    assert sorted(h.docs()) == [f"k{i}" for i in range(6)]


def test_a_connection_error_is_retryable_and_nothing_is_lost(osmem_url):
    h = Harness(osmem_url)
    h.sink.ensure_index()
    h.sink.add(_change(put("a", S0 + 1)))
    h.client.url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RetryableError):
        h.sink.flush()
    h.client.url = osmem_url
    assert h.sink.flush() == []
    assert list(h.docs()) == ["a"]


def test_a_lost_bulk_response_is_retried_and_found_already_applied(osmem_url):
    h = Harness(osmem_url)
    h.client.faults.extend(["lost"])
    h.process(put("a", S0 + 1, v=Decimal(1)))
    assert h.sink.stats["stale"] == 1  # the retry read the document the lost response had written
    assert h.docs() == {"a": {"pk": "a", "v": 1}}


@pytest.mark.parametrize(("mine", "theirs"), [(S0 + 5, S0 + 7), (S0 + 7, S0 + 5)])
def test_a_concurrent_writer_between_read_and_write_never_loses_the_newest(osmem_url, mine, theirs):
    h = Harness(osmem_url)
    other = Harness(osmem_url)
    h.process(put("a", S0 + 1, v=Decimal(1)))
    other.sink.add(_change(modify("a", theirs, v=Decimal(theirs - S0))))
    h.sink.add(_change(modify("a", mine, v=Decimal(mine - S0))))

    def other_writes() -> None:
        h.client.after_mget = None
        assert other.sink.flush() == []

    h.client.after_mget = other_writes
    assert h.sink.flush() == []
    assert h.sink.stats["conflicts"] == 1
    assert h.docs() == {"a": {"pk": "a", "v": 7}}


def test_conflicts_that_never_stop_end_in_a_retryable_error(osmem_url):
    h = Harness(osmem_url)
    h.process(put("a", S0 + 1))

    def meddle() -> None:  # someone rewrites the document after every read
        requests.put(f"{osmem_url}/orders/_doc/a", json={"pk": "a", "_stream": {"seq": seq_text(S0)}}, timeout=10)

    h.client.after_mget = meddle
    h.sink.add(_change(modify("a", S0 + 2, v=Decimal(2))))
    with pytest.raises(RetryableError, match="conflicting"):
        h.sink.flush()
    assert h.sink.stats["conflicts"] == h.sink.max_rounds
    h.client.after_mget = None
    assert h.sink.flush() == []
    assert h.docs() == {"a": {"pk": "a", "v": 2}}


@pytest.mark.parametrize("policy", ["delete", "mark"])
def test_ttl_expiry_follows_the_policy(osmem_url, policy):
    h = Harness(osmem_url, ttl_policy=policy)
    h.process(put("a", S0 + 1, v=Decimal(1)), put("b", S0 + 2, v=Decimal(2)))
    h.process(remove("a", S0 + 3, ttl=True, v=Decimal(1)), remove("b", S0 + 4, v=Decimal(2)))
    expected = {} if policy == "delete" else {"a": {"pk": "a", "v": 1, "_stream": {"expired": True}}}
    assert h.docs() == expected
    h.process(put("a", S0 + 1, v=Decimal(1)))  # stale after the expiry
    assert h.docs() == expected


def test_writes_go_through_an_alias(osmem_url):
    requests.put(f"{osmem_url}/orders-v1", json={"aliases": {"orders": {"is_write_index": True}}}, timeout=10)
    h = Harness(osmem_url, index="orders")
    h.process(put("a", S0 + 1), put("b", S0 + 2), remove("b", S0 + 3))
    assert h.client.calls["create-index"] == 0
    assert h.docs() == {"a": {"pk": "a"}}
    stored = requests.get(f"{osmem_url}/orders-v1/_doc/a", timeout=10).json()
    assert stored["_index"] == "orders-v1"


def test_a_composable_template_is_applied_when_the_index_is_missing(osmem_url, tmp_path):
    tpl = {"index_patterns": ["orders*"], "template": {"mappings": {"properties": {"status": {"type": "keyword"}}}}}
    (tmp_path / "tpl.json").write_bytes(orjson.dumps(tpl))
    cfg = Config(search=SearchSection(url=osmem_url, template="tpl.json"), source=str(tmp_path / "worker.toml"))
    search.create(cfg, provision=True)
    mapping = requests.get(f"{osmem_url}/orders/_mapping", timeout=10).json()["orders"]["mappings"]["properties"]
    assert mapping["status"] == {"type": "keyword"}
    assert mapping["_stream"]["properties"]["seq"] == {"type": "keyword"}
    assert requests.head(f"{osmem_url}/_index_template/worker-orders", timeout=10).status_code == 200
    search.create(cfg, provision=True)  # the index exists now: left alone


def test_an_existing_index_is_left_alone(osmem_url):
    requests.put(f"{osmem_url}/orders", json={"mappings": {"properties": {"v": {"type": "keyword"}}}}, timeout=10)
    sink = search.create(Config(search=SearchSection(url=osmem_url)), provision=True)
    assert sink.client.calls["create-index"] == 0


def test_a_request_over_the_size_limit_is_split_and_a_lone_giant_is_parked(osmem_url):
    class SmallLimit(SearchClient):  # a fake limit: osmem-server accepts any size
        def bulk(self, index: str, body: bytes, actions: int) -> list[dict[str, Any]]:
            if len(body) > 2_000:
                raise RequestTooLarge("injected 413")
            return super().bulk(index, body, actions)

    h = Harness(osmem_url, client_cls=SmallLimit)
    h.process(*[put(f"k{i}", S0 + i, blob="x" * 500) for i in range(4)], put("giant", S0 + 9, blob="x" * 5_000))
    assert sorted(h.docs()) == ["k0", "k1", "k2", "k3"]
    (err,) = h.deadletters.parked
    assert "request_too_large" in err.reason
    assert err.payload["dynamodb"]["Keys"] == {"pk": {"S": "giant"}}


def test_a_long_key_gets_a_hashed_id_that_round_trips(osmem_url):
    pk = "p" * 1000
    h = Harness(osmem_url)
    h.process(put(pk, S0 + 1, v=Decimal(1)), modify(pk, S0 + 2, v=Decimal(2)))
    h.process(put(pk, S0 + 1, v=Decimal(1)))
    doc = doc_id({"pk": pk})
    assert len(doc.encode()) <= 512
    assert h.docs() == {doc: {"pk": pk, "v": 2}}


def test_report_is_keyed_by_the_configured_index(osmem_url):
    cfg = Config(search=SearchSection(url=osmem_url, index="things"))
    sink = search.create(cfg)
    assert sink.report() == {"things": {}}
    sink.close()


def test_a_failing_cluster_at_start_does_not_fail_construction():
    cfg = Config(search=SearchSection(url=f"http://127.0.0.1:{free_port()}"))
    sink = search.create(cfg)  # no I/O without provision: the first flush retries instead
    sink.add(_change(put("a", S0)))
    with pytest.raises(RetryableError):
        sink.flush()
    with pytest.raises(RetryableError):
        search.create(dataclasses.replace(cfg), provision=True)


def _change(record: dict) -> Any:
    from worker.decode import decode
    from worker.diff import diff

    return diff(decode(RawRecord(record, "mem:1")))


def test_the_composition_root_builds_the_sink_and_it_reports(osmem_url):
    from worker.app import build_sinks
    from worker.sinks import Reporting

    (sink,) = build_sinks(Config(search=SearchSection(url=osmem_url, index="orders")), provision=True)
    assert sink.name == "search"
    assert isinstance(sink, Reporting)
    assert requests.head(f"{osmem_url}/orders", timeout=10).status_code == 200
    sink.close()


def test_38_digit_keys_differing_in_the_last_digit_are_two_documents(osmem_url):
    h = Harness(osmem_url, decimals="string")  # 38 digits are beyond an index's long: numbers as strings
    one, two = Decimal("12345678901234567890123456789012345671"), Decimal("12345678901234567890123456789012345672")
    h.process(
        build("INSERT", {"pk": one}, new={"pk": one, "v": "one"}, sequence=S0 + 1),
        build("INSERT", {"pk": two}, new={"pk": two, "v": "two"}, sequence=S0 + 2),
    )
    docs = h.docs()
    # The ids written out by hand: each key's own 38 digits (no rounding to 28 digits).
    assert sorted(docs) == ["12345678901234567890123456789012345671", "12345678901234567890123456789012345672"]
    assert docs["12345678901234567890123456789012345671"]["v"] == "one"
    assert docs["12345678901234567890123456789012345672"]["v"] == "two"
    assert not h.deadletters.parked
