"""The search sink on a real OpenSearch 2.19 node: the behaviours osmem-server does not show.

Each test names, in its docstring, how osmem-server 0.1.6 (the fast tier)
behaves on the same requests, so the fast tier's limits stay visible. Expected
documents are written out by hand here, never derived from
``worker.sinks.search.docs``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import requests

from worker.config import SearchSection
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.retry import RetryPolicy, no_sleep
from worker.shapes import build
from worker.sinks.search.client import connect
from worker.sinks.search.sink import SearchSink, index_setup
from worker.testing import MemoryDeadLetters

pytestmark = pytest.mark.integration

S0 = 10**21  # a 22-digit sequence number


class Real:
    """One sink and pipeline over a fresh index of the real node."""

    def __init__(self, url: str, index: str, template: dict[str, Any] | None = None, **settings: Any) -> None:
        self.url = url
        self.index = index
        self.section = SearchSection(url=url, index=index, **settings)
        self.client = connect(self.section, "us-east-1")
        self.sink = SearchSink(self.client, self.section, setup=index_setup(self.section, template))
        self.sink.ensure_index()
        self.deadletters = MemoryDeadLetters()
        retry = RetryPolicy(attempts=5, base=0.0, cap=0.0, sleep=no_sleep)
        self.pipeline = Pipeline([self.sink], self.deadletters, retry=retry)

    def process(self, *records: dict[str, Any]) -> None:
        self.pipeline.process([RawRecord(r, f"t:{i + 1}", "shardId-1") for i, r in enumerate(records)])

    def get(self, doc: str) -> bytes:
        """The GET response exactly as the engine sends it (no source filtering)."""
        resp = requests.get(f"{self.url}/{self.index}/_doc/{requests.utils.quote(doc, safe='')}", timeout=10)
        resp.raise_for_status()
        return resp.content

    def source(self, doc: str) -> Any:
        """The document's ``_source``, numbers kept as their exact text (see :func:`exact`)."""
        return exact(self.get(doc))["_source"]

    def search_ids(self, target: str, *, refresh: bool) -> list[str]:
        if refresh:
            requests.post(f"{self.url}/{self.index}/_refresh", timeout=10).raise_for_status()
        body = {"query": {"match_all": {}}, "size": 100}
        resp = requests.post(f"{self.url}/{target}/_search", json=body, timeout=10)
        resp.raise_for_status()
        return sorted(hit["_id"] for hit in resp.json()["hits"]["hits"])

    def close(self) -> None:
        self.pipeline.close()


def put(pk: Any, seq: int, **attrs: Any) -> dict[str, Any]:
    return build("INSERT", {"pk": pk}, new={"pk": pk, **attrs}, sequence=seq)


def remove(pk: Any, seq: int, **old: Any) -> dict[str, Any]:
    return build("REMOVE", {"pk": pk}, old={"pk": pk, **old}, sequence=seq)


def exact(raw: bytes) -> Any:
    """Parsed JSON where every number is kept as its exact text: ("num", "1.50")."""
    return json.loads(raw, parse_float=lambda s: ("num", s), parse_int=lambda s: ("num", s))


def meta(seq: int, *, deleted: bool = False) -> dict[str, Any]:
    return {"seq": str(seq).zfill(40), "deleted": deleted, "expired": False}


@pytest.fixture
def real(opensearch_url, real_index):
    made: list[Real] = []

    def make(template: dict[str, Any] | None = None, **settings: Any) -> Real:
        r = Real(opensearch_url, real_index, template, **settings)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -- numbers -----------------------------------------------------------------------------------

K1 = "12345678901234567890123456789012345671"  # 38 digits, differ only in the last one
K2 = "12345678901234567890123456789012345672"


def test_38_digit_numeric_keys_are_two_documents_with_their_exact_digits(real):
    """Two numeric keys that differ only in their 38th digit are two documents, and
    with ``decimals = "string"`` each keeps its exact digits.

    (Until ``search_docs.canonical_number`` keeps 38 significant digits, the two
    keys collide on one ``_id``; see issue 9.) osmem agrees with the engine here.
    """
    r = real(decimals="string")
    r.process(put(Decimal(K1), S0 + 1, v="one"), put(Decimal(K2), S0 + 2, v="two"))
    assert not r.deadletters.parked
    assert sorted(r.sink.report()[r.index]) == [K1, K2]
    assert r.source(K1) == {"pk": K1, "v": "one", "_stream": meta(S0 + 1)}
    assert r.source(K2) == {"pk": K2, "v": "two", "_stream": meta(S0 + 2)}


def test_a_38_digit_integer_as_a_json_number_is_parked_under_dynamic_mapping(real):
    """With ``decimals = "number"`` and no mapping, a 38-digit integer attribute maps the
    field as ``long`` and the engine refuses the document (``mapper_parsing_exception``,
    out of range of long): the record is parked with that error, the batch goes on.
    A template that maps such fields (``keyword``, ``double``) or ``decimals = "string"``
    avoids it. osmem agrees with the engine here.
    """
    r = real()
    r.process(put("small", S0 + 1, n=Decimal(5)), put("huge", S0 + 2, n=Decimal(K1)), put("z", S0 + 3))
    assert sorted(r.sink.report()[r.index]) == ["small", "z"]
    (err,) = r.deadletters.parked
    assert err.where == f"shardId-1/{S0 + 2}"
    assert "mapper_parsing_exception" in err.reason
    assert "out of range of" in err.reason


DECIMALS = {
    "qty": "1.50",
    "neg": "-0.001",
    "exp": "1E+2",
    "frac37": "123456789012345678901234567890123456.7",  # 37 significant digits
}


@pytest.mark.parametrize("mode", ["string", "number"])
def test_decimals_round_trip_byte_for_byte(real, mode):
    """The stored ``_source`` holds each decimal exactly as DynamoDB wrote it: ``"1.50"``
    (string) or ``1.50`` (number), a 37-digit decimal with all its digits, ``1E+2`` as is.

    The engine stores the source bytes it was sent and returns them on GET and in
    search hits. It does NOT when the response is filtered (``filter_path``) or the
    source is (``_source_includes``): then it re-encodes numbers through doubles
    (``1.50`` → ``1.5``, 37 digits → ``1.2345678901234568E35``). The sink reads only
    ``_stream.seq`` (a keyword string) that way, and its report reads unfiltered hits.
    Dynamic mapping indexes such numbers as ``float`` (search precision is the
    mapping's business; the source stays exact).

    osmem differs: it keeps the exact bytes even in filtered responses, so the fast
    tier cannot show a reader that filters losing digits. (It returned the exact
    bytes on GET and search too: the ``1.50`` → ``1.5`` loss in the environment notes
    was not reproduced on osmem 0.1.6.)
    """
    r = real(decimals=mode)
    r.process(put("d", S0 + 1, **{k: Decimal(v) for k, v in DECIMALS.items()}))
    assert not r.deadletters.parked
    want = {k: (v if mode == "string" else ("num", v)) for k, v in DECIMALS.items()}
    assert r.source("d") == {"pk": "d", **want, "_stream": meta(S0 + 1)}
    raw = r.get("d")
    requests.post(f"{r.url}/{r.index}/_refresh", timeout=10).raise_for_status()
    hits = requests.post(f"{r.url}/{r.index}/_search", json={"query": {"ids": {"values": ["d"]}}}, timeout=10)
    (hit,) = exact(hits.content)["hits"]["hits"]
    assert hit["_source"] == {"pk": "d", **want, "_stream": meta(S0 + 1)}
    for k, v in DECIMALS.items():  # the very bytes, in GET and search responses
        token = f'"{k}":"{v}"' if mode == "string" else f'"{k}":{v}'
        assert token.encode() in raw
        assert token.encode() in hits.content
    # A filtered response (filter_path here; _source_includes likewise) is re-encoded by the
    # engine: numbers pass through doubles. Strings are untouched.
    filtered = requests.post(f"{r.url}/{r.index}/_mget?filter_path=docs._source", json={"ids": ["d"]}, timeout=10)
    (doc,) = exact(filtered.content)["docs"]
    for k in ("qty", "frac37"):
        as_double = repr(float(DECIMALS[k])).replace("e+", "E")  # Java's Double.toString form
        assert doc["_source"][k] == (DECIMALS[k] if mode == "string" else ("num", as_double))


# -- names and terms -----------------------------------------------------------------------------


def test_dotted_attribute_names_next_to_a_map_with_the_same_prefix(real):
    """``{"a.b": 1, "a": {"c": 2}}`` is one object ``a`` with ``b`` and ``c`` in the mapping
    and is stored as sent. ``{"k": 1, "k.b": 2}`` (a scalar and a dotted name under it)
    is refused by the engine (400 ``illegal_argument_exception``: can't merge a non
    object mapping [k] with an object mapping): that record is parked with the
    engine's error and the rest of the batch is applied.

    osmem differs: it accepts ``{"k": 1, "k.b": 2}`` (and ``{"x.y": 1, "x": 5}``) and
    maps ``k`` as an object, so the fast tier never parks such a record.
    """
    r = real()
    r.process(
        put("dotted", S0 + 1, **{"a.b": Decimal(1), "a": {"c": Decimal(2)}}),
        put("clash", S0 + 2, **{"k": Decimal(1), "k.b": Decimal(2)}),
        put("after", S0 + 3, v="x"),
    )
    assert sorted(r.sink.report()[r.index]) == ["after", "dotted"]
    assert r.source("dotted") == {
        "pk": "dotted",
        "a.b": ("num", "1"),
        "a": {"c": ("num", "2")},
        "_stream": meta(S0 + 1),
    }
    mapping = requests.get(f"{r.url}/{r.index}/_mapping", timeout=10).json()[r.index]["mappings"]["properties"]
    assert set(mapping["a"]["properties"]) == {"b", "c"}
    (err,) = r.deadletters.parked
    assert err.where == f"shardId-1/{S0 + 2}"
    assert "illegal_argument_exception" in err.reason
    assert "can't merge a non object mapping [k] with an object mapping" in err.reason


def test_a_keyword_term_over_32766_bytes_is_parked_and_the_batch_goes_on(real):
    """A ``keyword`` value whose UTF-8 form exceeds 32,766 bytes is refused by Lucene
    (400 ``illegal_argument_exception``, caused by ``max_bytes_length_exceeded_exception``):
    the record is parked with that error, the others of the batch are applied. The
    limit is in bytes: 16,384 ``é`` (32,768 bytes) are refused, 32,766 ASCII bytes pass.

    osmem differs: it accepts terms of any length, so the fast tier never parks them.
    """
    r = real({"mappings": {"properties": {"code": {"type": "keyword"}}}})
    r.process(
        put("before", S0 + 1, code="a"),
        put("immense", S0 + 2, code="é" * 16_384),
        put("limit", S0 + 3, code="x" * 32_766),
        put("after", S0 + 4, code="b"),
    )
    assert sorted(r.sink.report()[r.index]) == ["after", "before", "limit"]
    (err,) = r.deadletters.parked
    assert err.where == f"shardId-1/{S0 + 2}"
    assert err.sink == "search"
    assert "immense term" in err.reason
    assert "max_bytes_length_exceeded_exception" in err.reason


# -- deletes, aliases, refresh -----------------------------------------------------------------


def test_tombstones_stay_out_of_the_live_alias_and_stale_writes_stay_out(real):
    """A REMOVE leaves a tombstone document (metadata only, ``deleted: true``); the
    filtered live alias hides it from searches; a stale INSERT redelivered after the
    delete is refused by the stored sequence number. osmem agrees with the engine here
    (once refreshed: see the refresh test).
    """
    r = real(live_alias="live-alias-test")
    r.process(put("a", S0 + 1, v="a"), put("b", S0 + 2, v="b"))
    r.process(remove("b", S0 + 3, v="b"))
    r.process(put("b", S0 + 2, v="b"))  # a late duplicate of the insert
    assert r.source("b") == {"_stream": meta(S0 + 3, deleted=True)}
    assert r.search_ids(r.index, refresh=True) == ["a", "b"]  # the tombstone is a document
    assert r.search_ids("live-alias-test", refresh=True) == ["a"]
    assert r.sink.report()[r.index] == {"a": {"pk": "a", "v": "a"}}
    assert r.sink.stats["stale"] == 1
    requests.delete(f"{r.url}/{r.index}/_alias/live-alias-test", timeout=10)


def test_a_search_sees_writes_only_after_a_refresh_and_the_report_refreshes(real):
    """With ``refresh_interval: -1`` a search does not see the sink's writes until the
    index is refreshed, while ``_mget`` (real time, what the sink's compare-and-set
    reads) sees them at once. ``SearchSink.report`` refreshes before it scans, so the
    report always shows every write.

    osmem differs: it ignores refresh, a search sees every write at once, so the fast
    tier cannot show a reader that forgets to refresh.
    """
    r = real({"settings": {"index": {"refresh_interval": "-1"}}})
    r.process(put("a", S0 + 1, v="a"), put("b", S0 + 2, v="b"))
    assert r.search_ids(r.index, refresh=False) == []
    mget = requests.post(f"{r.url}/{r.index}/_mget", json={"ids": ["a", "b"]}, timeout=10).json()
    assert [d["found"] for d in mget["docs"]] == [True, True]
    assert sorted(r.sink.report()[r.index]) == ["a", "b"]
    assert r.search_ids(r.index, refresh=False) == ["a", "b"]  # the report's refresh made them visible


def test_the_real_engine_is_opensearch_2_19(opensearch_node):
    """The node is the 2.x engine the issue asks for (osmem reports 3.8.0)."""
    info = requests.get(opensearch_node.url, timeout=10).json()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"] == opensearch_node.version
    assert info["version"]["number"].startswith("2.19.")
