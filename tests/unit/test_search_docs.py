"""Search documents: ids (escaping, hashing), projection, type mapping, sequence text."""

import base64
import hashlib
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import items
from worker.attributes import decode_item, json_item
from worker.canonical import number_text, seq_text
from worker.errors import RecordError
from worker.sinks.search.docs import (
    MAX_ID_BYTES,
    Projection,
    chunked,
    doc_id,
    is_tombstone,
    live_filter,
    stored_seq,
    strip_meta,
)

# -- ids --------------------------------------------------------------------------------------


def test_single_key_id_is_the_value():
    assert doc_id({"pk": "order#1"}) == "order#1"
    assert doc_id({"pk": Decimal("42")}) == "42"
    assert doc_id({"pk": b"\x00\xff"}) == base64.b64encode(b"\x00\xff").decode()


def test_composite_key_joins_components_in_name_order():
    assert doc_id({"sk": "line#2", "pk": "order#1"}) == "order#1|line#2"
    assert doc_id({"pk": "order#1", "sk": "line#2"}) == "order#1|line#2"


def test_separator_and_backslash_are_escaped_so_ids_stay_distinct():
    one = doc_id({"a": "x|y", "b": "z"})
    two = doc_id({"a": "x", "b": "y|z"})
    assert one == "x\\|y|z"
    assert two == "x|y\\|z"
    assert one != two
    assert doc_id({"a": "x\\", "b": "y"}) == "x\\\\|y"
    assert doc_id({"a": "x", "b": "\\y"}) == "x|\\\\y"


@pytest.mark.parametrize("text", ["1", "1.0", "1.000", "1E+0", "10E-1"])
def test_numbers_equal_by_value_give_one_id(text):
    assert doc_id({"pk": Decimal(text)}) == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", "0"), ("-0", "0"), ("0.00", "0"), ("1E+2", "100"), ("0.10", "0.1"), ("-2.50", "-2.5"), ("1E-3", "0.001")],
)
def test_canonical_number(text, expected):
    assert number_text(Decimal(text)) == expected


def test_38_digit_keys_differing_in_the_last_digit_get_their_own_ids():
    # Expectations written out by hand: the ids are the digits themselves.
    one = doc_id({"pk": Decimal("12345678901234567890123456789012345671")})
    two = doc_id({"pk": Decimal("12345678901234567890123456789012345672")})
    assert one == "12345678901234567890123456789012345671"
    assert two == "12345678901234567890123456789012345672"
    assert doc_id({"pk": "a", "n": Decimal("1.234567890123456789012345678901234567E+40")}) == (
        "12345678901234567890123456789012345670000|a"  # keys in name order: n, then pk
    )


def test_key_problems_are_record_errors_naming_the_attribute():
    with pytest.raises(RecordError) as exc:
        doc_id({})
    assert exc.value.field == "dynamodb.Keys"
    with pytest.raises(RecordError) as exc:
        doc_id({"pk": ""})
    assert exc.value.field == "dynamodb.Keys.pk"
    with pytest.raises(RecordError) as exc:
        doc_id({"pk": True})
    assert exc.value.field == "dynamodb.Keys.pk"


def test_an_id_of_exactly_512_bytes_is_kept_and_one_more_byte_is_hashed():
    exact = "é" * 256  # 512 bytes in UTF-8
    assert doc_id({"pk": exact}) == exact
    longer = exact + "x"
    hashed = doc_id({"pk": longer})
    assert len(hashed.encode()) <= MAX_ID_BYTES
    assert hashed.endswith("\\#" + hashlib.sha256(longer.encode()).hexdigest())
    assert hashed.startswith("é" * 100)


def test_hashed_ids_are_stable_and_differ_when_only_the_tail_differs():
    a = doc_id({"pk": "x" * 600 + "a"})
    b = doc_id({"pk": "x" * 600 + "b"})
    assert a != b
    assert a == doc_id({"pk": "x" * 600 + "a"})
    assert a[:-64] == b[:-64]  # same prefix, different digest


def test_hash_prefix_never_cuts_an_escape_in_half():
    # 1,000 backslashes: each is the two-character token "\\\\"; the prefix keeps whole tokens.
    hashed = doc_id({"pk": "\\" * 1000})
    prefix = hashed[: hashed.index("\\#", len(hashed) - 66)]
    assert len(prefix) % 2 == 0 and set(prefix) == {"\\"}


def test_an_unhashed_id_cannot_look_like_a_hashed_one():
    digest = "0" * 64
    crafted = doc_id({"pk": "abc\\#" + digest})  # a key that imitates the hashed form
    assert crafted == "abc\\\\#" + digest  # its backslash is escaped, so "\\#" is not a token
    assert crafted != "abc\\#" + digest


# Mostly the characters escaping and hashing care about, so near-collisions are common.
texts = st.one_of(st.text(alphabet="ab|\\#é", min_size=1, max_size=400), st.text(min_size=1, max_size=300))
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: Decimal(str(d)))
# A key attribute has one type per table: both keys of an example share the pk type.
key_pairs = st.one_of(
    st.tuples(st.tuples(texts, texts), st.tuples(texts, texts)),
    st.tuples(st.tuples(decimals, texts), st.tuples(decimals, texts)),
    st.tuples(st.tuples(st.binary(min_size=1, max_size=400), texts), st.tuples(st.binary(min_size=1), texts)),
)


@settings(max_examples=300, deadline=None)
@given(pair=key_pairs)
def test_distinct_keys_get_distinct_ids_within_the_limit(pair):
    a, b = pair
    ia, ib = doc_id({"pk": a[0], "sk": a[1]}), doc_id({"pk": b[0], "sk": b[1]})
    assert len(ia.encode()) <= MAX_ID_BYTES
    assert (ia == ib) == (a[0] == b[0] and a[1] == b[1])


# -- sequence numbers ---------------------------------------------------------------------------


def test_sequence_text_is_fixed_width_so_text_order_is_numeric_order():
    small, big = 999_999_999_999_999_999_999, 1_000_000_000_000_000_000_000  # 21 and 22 digits
    assert str(small) > str(big)  # the trap
    assert seq_text(small) < seq_text(big)
    assert len(seq_text(small)) == len(seq_text(10**39)) == 40
    with pytest.raises(RecordError):
        seq_text(10**40)


def test_stored_sequence_is_read_from_the_metadata_only():
    assert stored_seq({"_stream": {"seq": seq_text(123)}}, "_stream") == 123
    assert stored_seq({"_stream": {"seq": "12x"}}, "_stream") is None
    assert stored_seq({"seq": "1"}, "_stream") is None
    assert stored_seq({}, "_stream") is None
    assert stored_seq(None, "_stream") is None
    assert stored_seq({"m": {"seq": "7"}}, "m") == 7


# -- bodies ---------------------------------------------------------------------------------------


ITEM = {
    "pk": "o#1",
    "qty": Decimal("1.50"),
    "big": Decimal("12345678901234567890123456789012345678"),
    "exp": Decimal("1E+2"),
    "tags": frozenset({"b", "a", "c"}),
    "nums": frozenset({Decimal(10), Decimal(9), Decimal(-1)}),
    "bins": frozenset({b"\x02", b"\x01"}),
    "blob": b"\x00\x01",
    "flag": True,
    "none": None,
    "map": {"inner": [Decimal("0.1"), "s", {"deep": frozenset({"z", "y"})}]},
}


def test_numbers_keep_their_exact_digits_as_json_numbers():
    body = Projection().document(ITEM, 5)
    assert b'"qty":1.50' in body
    assert b'"big":12345678901234567890123456789012345678' in body
    assert b'"exp":1E+2' in body
    doc = orjson.loads(body)
    assert doc["nums"] == [-1, 9, 10]  # numerically sorted, not as text
    assert doc["map"]["inner"][0] == 0.1


def test_numbers_as_strings_when_configured():
    doc = orjson.loads(Projection(decimals="string").document(ITEM, 5))
    assert doc["qty"] == "1.50"
    assert doc["exp"] == "1E+2"
    assert doc["nums"] == ["-1", "9", "10"]


def test_sets_are_sorted_arrays_and_binary_is_base64():
    doc = orjson.loads(Projection().document(ITEM, 5))
    assert doc["tags"] == ["a", "b", "c"]
    assert doc["bins"] == [base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02").decode()]
    assert doc["blob"] == "AAE="
    assert doc["flag"] is True
    assert doc["none"] is None
    assert doc["map"]["inner"][2] == {"deep": ["y", "z"]}


def test_metadata_carries_the_padded_sequence_number():
    doc = orjson.loads(Projection().document({"pk": "a"}, 10**21))
    assert doc["_stream"] == {"seq": seq_text(10**21), "deleted": False, "expired": False}
    marked = orjson.loads(Projection(meta_field="m").document({"pk": "a"}, 3, expired=True))
    assert marked["m"]["expired"] is True
    assert orjson.loads(Projection().tombstone(3)) == {
        "_stream": {"seq": seq_text(3), "deleted": True, "expired": False}
    }


def test_include_exclude_and_rename():
    item = {"pk": "a", "x": Decimal(1), "y": "s", "z": b"b"}
    assert Projection(include=("pk", "y", "missing")).project(item) == {"pk": "a", "y": "s"}
    assert Projection(exclude=("z",)).project(item) == {"pk": "a", "x": Decimal(1), "y": "s"}
    assert Projection(rename={"y": "why"}).project(item) == {"pk": "a", "x": Decimal(1), "why": "s", "z": b"b"}
    assert Projection(include=("pk", "y"), rename={"y": "why"}).project(item) == {"pk": "a", "why": "s"}


def test_rename_collisions_and_the_metadata_name_are_record_errors():
    with pytest.raises(RecordError) as exc:
        Projection(rename={"x": "y"}).project({"x": 1, "y": 2})
    assert "y" in exc.value.reason
    with pytest.raises(RecordError) as exc:
        Projection().project({"pk": "a", "_stream": "mine"})
    assert exc.value.field == "dynamodb.NewImage._stream"
    assert Projection(meta_field="_meta").project({"pk": "a", "_stream": "mine"}) == {"pk": "a", "_stream": "mine"}


@settings(max_examples=60, deadline=None)
@given(item=items)
def test_every_item_encodes_to_json_that_parses(item):
    for decimals in ("number", "string"):
        doc = orjson.loads(Projection(decimals=decimals, meta_field="\x00meta").document(item, 1))
        assert set(doc) == {*item, "\x00meta"}


def test_strip_meta_keeps_only_an_expiry_mark():
    assert strip_meta({"a": 1, "_stream": {"seq": "1", "deleted": False, "expired": False}}, "_stream") == {"a": 1}
    assert strip_meta({"a": 1, "_stream": {"seq": "1", "expired": True}}, "_stream") == {
        "a": 1,
        "_stream": {"expired": True},
    }
    assert is_tombstone({"_stream": {"deleted": True}}, "_stream")
    assert not is_tombstone({"_stream": {"deleted": False}}, "_stream")
    assert not is_tombstone(None, "_stream")
    assert live_filter("m") == {"bool": {"must_not": [{"term": {"m.deleted": True}}]}}


# -- chunking -------------------------------------------------------------------------------------


def test_chunks_are_bounded_by_count_and_bytes():
    sizes = [(str(i), 10) for i in range(7)]
    assert chunked(sizes, 3, 1000) == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert chunked(sizes, 100, 25) == [["0", "1"], ["2", "3"], ["4", "5"], ["6"]]
    assert chunked([("a", 5), ("huge", 500), ("b", 5)], 100, 100) == [["a"], ["huge"], ["b"]]
    assert chunked([], 10, 10) == []


# -- documents built from the raw image (json_item) against the decoded image ---------------

number_texts = st.one_of(
    st.from_regex(r"[-+]?[0-9]{1,6}(\.[0-9]{0,10})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"-?0\.0{4,9}[0-9]{0,3}", fullmatch=True),  # around Decimal's switch to exponents
    st.sampled_from(["0", "-0", "1.50", "1E+2", "NaN", "Infinity", "1_000", " 1", "9" * 39, "1e126", ".5", "5."]),
)
wire_scalars = st.one_of(
    st.builds(lambda t: {"N": t}, number_texts),
    st.builds(lambda t: {"S": t}, st.text(max_size=8)),
    st.builds(lambda b: {"B": base64.b64encode(b).decode()}, st.binary(max_size=6)),
    st.sampled_from([{"BOOL": True}, {"BOOL": False}, {"NULL": True}, {"B": "***"}, {"X": "1"}, {"S": "\ud800"}]),
    st.builds(lambda ts: {"NS": ts}, st.lists(number_texts, min_size=1, max_size=4)),
    st.builds(lambda ts: {"SS": ts}, st.lists(st.text(max_size=4), min_size=1, max_size=4)),
    st.builds(
        lambda bs: {"BS": [base64.b64encode(b).decode() for b in bs]},
        st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=3),
    ),
)
wire_values = st.recursive(
    wire_scalars,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"L": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda m: {"M": m}, st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)),
    ),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(
    wire=st.dictionaries(st.text(min_size=1, max_size=6), wire_values, max_size=6),
    decimals=st.sampled_from(["number", "string"]),
)
def test_documents_from_the_raw_image_are_byte_for_byte_the_decoded_images(wire, decimals):
    projection = Projection(decimals=decimals)
    try:
        expected = projection.dumps(decode_item(wire, "dynamodb.NewImage"))
    except RecordError as exc:
        with pytest.raises(RecordError) as got:
            json_item(wire, "dynamodb.NewImage", decimals)
        assert str(got.value) == str(exc)
        return
    assert projection.dumps(json_item(wire, "dynamodb.NewImage", decimals)) == expected


def test_numbers_keep_their_text_only_where_decimal_would_print_it_unchanged():
    wire = {"a": {"N": "1.50"}, "b": {"N": "0.0000001"}, "c": {"N": "0.000001"}, "d": {"N": "1E+2"}, "e": {"N": "-0"}}
    assert Projection().dumps(json_item(wire, "p", "number")) == b'{"a":1.50,"b":1E-7,"c":0.000001,"d":1E+2,"e":-0}'
