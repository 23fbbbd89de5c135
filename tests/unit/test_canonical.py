"""The canonical texts every sink shares (expectations written out by hand)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.canonical import SEQ_WIDTH, fits_dynamodb, number_text, seq_text
from worker.errors import RecordError


def test_38_digit_numbers_differing_in_the_last_digit_keep_their_own_text():
    assert number_text(Decimal("12345678901234567890123456789012345671")) == "12345678901234567890123456789012345671"
    assert number_text(Decimal("12345678901234567890123456789012345672")) == "12345678901234567890123456789012345672"
    assert (
        number_text(Decimal("0.12345678901234567890123456789012345671")) == "0.12345678901234567890123456789012345671"
    )
    assert (
        number_text(Decimal("1.2345678901234567890123456789012345670E+2")) == "123.4567890123456789012345678901234567"
    )


def test_numbers_equal_by_value_have_one_text():
    for text in ("1", "1.0", "1E+0", "10E-1", "1.000"):
        assert number_text(Decimal(text)) == "1"
    assert number_text(Decimal("-0.00")) == "0"


def test_dynamodb_keeps_38_significant_digits():
    assert fits_dynamodb(Decimal("12345678901234567890123456789012345678"))
    assert not fits_dynamodb(Decimal("123456789012345678901234567890123456789"))
    assert fits_dynamodb(Decimal("1.2300000000000000000000000000000000000000E+100"))


def test_sequence_text_is_fixed_width_and_orders_like_the_number():
    assert SEQ_WIDTH == 40
    assert seq_text(7) == "0000000000000000000000000000000000000007"
    assert seq_text(10**21 - 1) < seq_text(10**21)
    with pytest.raises(RecordError):
        seq_text(10**40)
    with pytest.raises(RecordError):
        seq_text(-1)


@settings(max_examples=500, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False), st.sampled_from(["plain", "exponent"]))
def test_number_text_is_the_plain_text_of_the_normalized_value(d, form):
    d = Decimal(f"{d:E}") if form == "exponent" else d
    text = number_text(d)
    assert Decimal(text) == d  # the same value
    assert "E" not in text and "e" not in text
    if "." in text:  # no trailing zeros after the point, and no bare point
        assert not text.endswith("0") and not text.endswith(".")
    assert number_text(Decimal(text)) == text  # one text per value
