from decimal import Decimal

import pytest

from worker.attributes import decode_item, decode_value, encode_value
from worker.errors import RecordError


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"S": "x"}, "x"),
        ({"N": "1.50"}, Decimal("1.50")),
        ({"N": "12345678901234567890123456789012345678"}, Decimal("12345678901234567890123456789012345678")),
        ({"B": "AAE="}, b"\x00\x01"),
        ({"B": b"\x00\x01"}, b"\x00\x01"),
        ({"BOOL": False}, False),
        ({"NULL": True}, None),
        ({"M": {"a": {"N": "1"}}}, {"a": Decimal(1)}),
        ({"L": [{"S": "a"}, {"N": "2"}]}, ["a", Decimal(2)]),
        ({"SS": ["b", "a"]}, frozenset({"a", "b"})),
        ({"NS": ["1", "2.5"]}, frozenset({Decimal(1), Decimal("2.5")})),
        ({"BS": ["AA==", b"\x01"]}, frozenset({b"\x00", b"\x01"})),
    ],
)
def test_every_type_decodes(wire, expected):
    assert decode_value(wire) == expected
    assert type(decode_value(wire)) is type(expected)


def test_number_keeps_its_text():
    assert str(decode_value({"N": "1.50"})) == "1.50"


@pytest.mark.parametrize(
    ("wire", "field", "message"),
    [
        ({"a": {"X": "1"}}, "img.a", "unknown attribute type tag 'X'"),
        ({"a": {"N": "abc"}}, "img.a", "N is not a number"),
        ({"a": {"N": "NaN"}}, "img.a", "not finite"),
        ({"a": {"B": "***"}}, "img.a", "not valid base64"),
        ({"a": {"M": {"b": {"L": [{"S": 1}]}}}}, "img.a.b[0]", "S must be a string"),
        ({"a": {"S": "x", "N": "1"}}, "img.a", "exactly one type tag"),
        ({"a": "plain"}, "img.a", "must be an object"),
    ],
)
def test_malformed_values_name_the_path(wire, field, message):
    with pytest.raises(RecordError) as err:
        decode_item(wire, "img")
    assert err.value.field == field
    assert message in err.value.reason


def test_encode_round_trip_and_empty_set_refused():
    item = {"s": {"a"}, "n": {Decimal(1)}, "b": {b"x"}, "m": {"l": [True, None, b"\x00"]}}
    assert decode_item({k: encode_value(v) for k, v in item.items()}, "i") == item
    with pytest.raises(ValueError):
        encode_value(set())
