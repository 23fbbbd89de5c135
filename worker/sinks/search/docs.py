"""Documents of the search sink: the ``_id`` from an item's key, the body from an image.

Pure functions and frozen values; no I/O. :mod:`worker.sinks.search` explains
the ordering design these documents carry.

``_id``
    The key attributes in name order, each as text: ``S`` as is, ``N`` in
    canonical plain notation (DynamoDB compares numbers by value, so ``1.0``
    and ``1`` are one key and get one id), ``B`` as base64. In ``S`` values
    ``\\`` and ``|`` are escaped (``\\\\``, ``\\|``); components are joined by
    ``|``. A key attribute has one type per table, so distinct keys of one
    table always get distinct ids.

    OpenSearch refuses ids over 512 bytes (UTF-8). A longer id becomes a prefix
    of whole escape tokens, then ``\\#``, then the SHA-256 (hex) of the full
    id. ``\\#`` never occurs in an unhashed id (escaping only produces ``\\\\``
    and ``\\|``), so a hashed id never equals an unhashed one; two hashed ids are
    equal only for equal full ids (barring a SHA-256 collision). The id goes
    into request bodies (bulk, mget), never into a URL path, so no URL escaping
    is needed; tools that put it in a path must percent-encode it.

Body
    The new image projected by :class:`Projection` (top-level ``include`` or
    ``exclude``, then ``rename``) plus the sink's metadata object under
    ``meta_field`` (default ``_stream``)::

        {"seq": "<40-digit zero-padded stream sequence number>",
         "deleted": false, "expired": false}

    Types: numbers exactly as DynamoDB sent them, either as JSON numbers (the
    digits are copied, never through a float: ``_source`` keeps ``1.50``) or as
    strings; sets as arrays sorted by value (numbers numerically, binary by
    bytes); binary as base64; maps and lists recursively; NULL as ``null``.

Tombstones
    A deletion is written as a document that keeps only the metadata, with
    ``deleted: true``. Searches must exclude them with :func:`live_filter` (or go
    through the filtered alias the sink can create, ``search.live_alias``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

from worker.attributes import Item, Value
from worker.canonical import number_text, seq_text
from worker.errors import RecordError

MAX_ID_BYTES = 512  # OpenSearch's limit on _id (UTF-8 bytes)
HASH_MARK = "\\#"


def live_filter(meta_field: str = "_stream") -> dict[str, Any]:
    """The query filter that excludes tombstones (documents without metadata count as live)."""
    return {"bool": {"must_not": [{"term": {f"{meta_field}.deleted": True}}]}}


def meta_mapping() -> dict[str, Any]:
    """The mapping of the metadata object (merged into every index the sink creates)."""
    return {
        "properties": {
            "seq": {"type": "keyword"},
            "deleted": {"type": "boolean"},
            "expired": {"type": "boolean"},
        }
    }


# -- ids ------------------------------------------------------------------------------


def doc_id(key: Mapping[str, Value]) -> str:
    """The document id of an item key (see the module docstring); raises RecordError."""
    if not key:
        raise RecordError("the record has no key attributes", field="dynamodb.Keys")
    tokens: list[str] = []
    for i, name in enumerate(sorted(key)):
        if i:
            tokens.append("|")
        tokens.extend(_key_tokens(key[name], name))
    text = "".join(tokens)
    if len(text.encode("utf-8")) <= MAX_ID_BYTES:
        return text
    return _hashed(tokens, text)


def _key_tokens(value: Value, name: str) -> list[str]:
    if isinstance(value, str):
        if not value:
            raise RecordError("a key string must not be empty", field=f"dynamodb.Keys.{name}")
        return [_ESCAPES.get(c, c) for c in value]
    if isinstance(value, Decimal):
        return [number_text(value)]
    if isinstance(value, bytes):
        if not value:
            raise RecordError("a key binary must not be empty", field=f"dynamodb.Keys.{name}")
        return [base64.b64encode(value).decode("ascii")]
    raise RecordError(f"a key must be S, N or B, got {type(value).__name__}", field=f"dynamodb.Keys.{name}")


_ESCAPES = {"\\": "\\\\", "|": "\\|"}


def _hashed(tokens: list[str], text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    budget = MAX_ID_BYTES - len(HASH_MARK) - len(digest)
    out: list[str] = []
    used = 0
    for tok in tokens:  # whole tokens only, so an escape is never cut in half
        size = len(tok.encode("utf-8"))
        if used + size > budget:
            break
        out.append(tok)
        used += size
    return "".join(out) + HASH_MARK + digest


# -- sequence numbers -------------------------------------------------------------------


def stored_seq(source: Mapping[str, Any] | None, meta_field: str) -> int | None:
    """The sequence number a stored document carries, or ``None`` (no metadata: any write wins)."""
    if not source:
        return None
    meta = source.get(meta_field)
    if not isinstance(meta, Mapping):
        return None
    seq = meta.get("seq")
    if isinstance(seq, str) and seq.isdigit():
        return int(seq)
    return None


# -- bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """Which attributes go into the document, under which names, with which number form."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    decimals: Literal["number", "string"] = "number"
    meta_field: str = "_stream"

    def project(self, item: Item) -> dict[str, Value]:
        """The top-level selection and renaming of ``item`` (values untouched)."""
        if self.include:
            chosen = {k: item[k] for k in self.include if k in item}
        elif self.exclude:
            chosen = {k: v for k, v in item.items() if k not in self.exclude}
        else:
            chosen = dict(item)
        if not self.rename:
            out = chosen
        else:
            out = {}
            for k, v in chosen.items():
                name = self.rename.get(k, k)
                if name in out:
                    raise RecordError(
                        f"renaming gives two attributes the name {name!r}", field=f"dynamodb.NewImage.{k}"
                    )
                out[name] = v
        if self.meta_field in out:
            raise RecordError(
                f"attribute {self.meta_field!r} collides with the sink's metadata field (set search.meta_field)",
                field=f"dynamodb.NewImage.{self.meta_field}",
            )
        return out

    def document(self, item: Item, seq: int, *, expired: bool = False) -> bytes:
        """The JSON body of a live document."""
        doc = self.project(item)
        doc[self.meta_field] = {"seq": seq_text(seq), "deleted": False, "expired": expired}
        return self.dumps(doc)

    def tombstone(self, seq: int) -> bytes:
        """The JSON body of a deletion: metadata only."""
        return orjson.dumps({self.meta_field: {"seq": seq_text(seq), "deleted": True, "expired": False}})

    def dumps(self, doc: Mapping[str, Any]) -> bytes:
        default = _default_number if self.decimals == "number" else _default_string
        try:
            return orjson.dumps(doc, default=default)
        except TypeError as exc:  # orjson.JSONEncodeError: a value no DynamoDB type produces
            raise RecordError(f"cannot encode the document: {exc}", field="dynamodb.NewImage") from exc


def _default_number(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        # The exact digits as a JSON number: str(Decimal) of a finite value is valid JSON
        # number syntax ("1.50", "-0", "1E+2"); a float would round 38-digit values.
        return orjson.Fragment(str(obj).encode("ascii"))
    return _default_common(obj)


def _default_string(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    return _default_common(obj)


def _default_common(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, frozenset | set):
        return sorted(obj)  # elements come back through default (Decimal, bytes)
    raise TypeError(f"{type(obj).__name__} is not a DynamoDB value")


def strip_meta(source: Mapping[str, Any], meta_field: str) -> dict[str, Any]:
    """A stored document as the table shows it: metadata removed, an expiry kept as a mark."""
    out = {k: v for k, v in source.items() if k != meta_field}
    meta = source.get(meta_field)
    if isinstance(meta, Mapping) and meta.get("expired"):
        out[meta_field] = {"expired": True}
    return out


def is_tombstone(source: Mapping[str, Any] | None, meta_field: str) -> bool:
    meta = (source or {}).get(meta_field)
    return isinstance(meta, Mapping) and meta.get("deleted") is True


def chunked(sizes: Iterable[tuple[str, int]], max_count: int, max_bytes: int) -> list[list[str]]:
    """Group ids (with their request sizes) into runs bounded by count and bytes.

    An entry larger than ``max_bytes`` travels alone (the service decides).
    """
    out: list[list[str]] = []
    cur: list[str] = []
    used = 0
    for doc, size in sizes:
        if cur and (len(cur) >= max_count or used + size > max_bytes):
            out.append(cur)
            cur, used = [], 0
        cur.append(doc)
        used += size
    if cur:
        out.append(cur)
    return out
