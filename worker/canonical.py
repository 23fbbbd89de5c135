"""Canonical texts every sink shares: numbers, sequence numbers, and the stream's retention.

One home for each, so that two sinks never disagree about what "the same
number" or "a later sequence" is:

* :func:`number_text`: the exact canonical text of a DynamoDB number. DynamoDB
  keeps 38 significant digits (and numbers may carry more in transit), so the
  normalisation runs in an exact context (:data:`EXACT`), never in Python's
  default 28-digit one, which would round two different 38-digit keys to the
  same text. Used for search ``_id``\\ s, aggregate groups and anything keyed
  by a number.
* :func:`seq_text`: a stream sequence number (21 to 40 digits) as fixed-width
  text, so that text order is numeric order (search metadata, aggregate
  high-water marks, archive object names).
* :data:`STREAM_RETENTION_SECONDS`: how long DynamoDB Streams keeps a record.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from worker.errors import RecordError

__all__ = [
    "DYNAMODB_DIGITS",
    "EXACT",
    "SEQ_WIDTH",
    "STREAM_RETENTION_SECONDS",
    "fits_dynamodb",
    "number_text",
    "seq_text",
]

EXACT = decimal.Context(
    prec=400,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)
"""Arithmetic that never rounds silently: an inexact result raises ``decimal.Inexact``."""

DYNAMODB_DIGITS = 38  # significant digits DynamoDB stores exactly
SEQ_WIDTH = 40  # DynamoDB Streams sequence numbers have 21-40 digits
STREAM_RETENTION_SECONDS = 24 * 3600.0  # DynamoDB Streams keeps records for 24 hours


def number_text(d: Decimal) -> str:
    """Canonical text of a number, exact at any precision: no exponent, no trailing zeros.

    ``1``, ``1.0`` and ``1E+0`` all give ``1``; ``12.50`` gives ``12.5``; two
    numbers differing in their 38th significant digit give different texts.
    """
    if d.is_zero():
        return "0"
    text = str(d)
    if "E" not in text:  # plain notation already (the usual case): only trailing zeros to drop
        return text.rstrip("0").rstrip(".") if "." in text else text
    return format(d.normalize(EXACT), "f")


def fits_dynamodb(d: Decimal) -> bool:
    """True when DynamoDB can store ``d`` exactly (38 significant digits)."""
    return d.is_zero() or len(d.normalize(EXACT).as_tuple().digits) <= DYNAMODB_DIGITS


def seq_text(seq: int) -> str:
    """The stream sequence number as a fixed-width string: text order equals numeric order.

    Raises :class:`RecordError` (field ``dynamodb.SequenceNumber``) when it is
    negative or longer than :data:`SEQ_WIDTH` digits.
    """
    text = str(seq)
    if seq < 0 or len(text) > SEQ_WIDTH:
        raise RecordError(f"sequence number out of range: {text}", field="dynamodb.SequenceNumber")
    return text.zfill(SEQ_WIDTH)
