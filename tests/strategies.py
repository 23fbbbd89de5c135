"""Hypothesis strategies for DynamoDB items (every attribute type, nested)."""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

from hypothesis import strategies as st

from worker.attributes import DYNAMODB_DIGITS, number_fault

names = st.text(min_size=1, max_size=12)
# Numbers DynamoDB holds: 38 significant digits at most, magnitudes in 1e-130..9.99e125 (or 0).
numbers = (
    st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**20), max_value=10**20)
    .map(lambda d: Decimal(str(Context(prec=DYNAMODB_DIGITS).plus(d))))
    .filter(lambda d: number_fault(d) is None)
)
scalars = st.one_of(
    st.text(max_size=20),
    numbers,
    st.binary(max_size=16),
    st.booleans(),
    st.none(),
    st.frozensets(st.text(max_size=8), min_size=1, max_size=4),
    st.frozensets(numbers, min_size=1, max_size=4),
    st.frozensets(st.binary(min_size=1, max_size=8), min_size=1, max_size=4),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=12,
)
items = st.dictionaries(names, values, max_size=8).map(lambda d: {"pk": "k", **d})
