"""Local runs with existing items: an items file loaded into an emulated source table before its
stream is enabled, and fixture records turned into writes to that table.

Items file: one item per line in DynamoDB JSON, as ``aws dynamodb scan`` prints
them (``{"order_id": {"S": "o-1"}, ...}``); ``{"Item": {...}}`` (GetItem's shape)
is accepted too, and so is a whole ``aws dynamodb scan`` page (``{"Items": [...]}``)
on one line. A bad line stops the run naming ``file:line`` and what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from worker.attributes import decode_item, encode_item
from worker.errors import ConfigError, FatalError, RecordError
from worker.records import EventName, StreamRecord

_TYPES = {"S", "N", "B"}


@dataclass(frozen=True)
class KeySchema:
    """The source table's key: ``(name, type)`` of the partition key and the optional sort key."""

    attributes: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.attributes)

    @classmethod
    def parse(cls, text: str, flag: str = "--table-key") -> KeySchema:
        """``name[:S|N|B][,sort[:S|N|B]]`` (type S by default)."""
        attrs = []
        for part in (p.strip() for p in text.split(",")):
            name, _, typ = part.partition(":")
            typ = typ or "S"
            if not name or typ not in _TYPES:
                raise ConfigError(flag, f"expected name[:S|N|B][,sort[:S|N|B]], got {text!r}")
            attrs.append((name, typ))
        if not 1 <= len(attrs) <= 2:
            raise ConfigError(flag, f"a key has one or two attributes, got {text!r}")
        return cls(tuple(attrs))

    @classmethod
    def infer(cls, records: Iterable[StreamRecord]) -> KeySchema | None:
        """The key of the first record's ``Keys`` (attribute order: as written)."""
        for record in records:
            keys = record.original().get("dynamodb", {}).get("Keys") or {}
            attrs = [(n, next(iter(av))) for n, av in keys.items() if isinstance(av, dict) and len(av) == 1]
            if attrs and all(t in _TYPES for _, t in attrs) and len(attrs) <= 2:
                return cls(tuple(attrs))
        return None


def read_items(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, item in DynamoDB JSON)`` for every item of an items file."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError("--table-items", f"cannot read {name}: {exc}") from exc
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{n}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise FatalError(f"{where}: not JSON: {exc}") from None
        if isinstance(obj, dict) and isinstance(obj.get("Items"), list):
            items = obj["Items"]
        elif isinstance(obj, dict) and isinstance(obj.get("Item"), dict):
            items = [obj["Item"]]
        else:
            items = [obj]
        for i, item in enumerate(items):
            at = where if len(items) == 1 else f"{where}#Items[{i}]"
            try:
                decode_item(item, "Item")
            except RecordError as exc:
                raise FatalError(f"{at}: not a DynamoDB-JSON item: {exc.reason} (at {exc.field})") from None
            if not isinstance(item, dict) or not item:
                raise FatalError(f"{at}: not a DynamoDB-JSON item (an object of attribute values)")
            yield at, item


def create_table(ddb: Any, table: str, key: KeySchema, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Create ``table``, load ``items`` (each must carry the key), then enable its stream."""
    kinds = ("HASH", "RANGE")
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": n, "KeyType": kinds[i]} for i, (n, _) in enumerate(key.attributes)],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in key.attributes],
        BillingMode="PAY_PER_REQUEST",
    )
    count = 0
    batch: dict[bytes, dict[str, Any]] = {}  # by key: a later line of a key replaces an earlier one
    for where, item in items:
        for n, t in key.attributes:
            if t not in (item.get(n) or {}):
                raise FatalError(f"{where}: the item lacks its key attribute {n!r} of type {t}")
        k = orjson.dumps([item[n] for n in key.names])
        if k in batch:
            _write_batch(ddb, table, list(batch.values()))
            batch = {}
        batch[k] = {"PutRequest": {"Item": _boto(item)}}
        count += 1
        if len(batch) == 25:
            _write_batch(ddb, table, list(batch.values()))
            batch = {}
    if batch:
        _write_batch(ddb, table, list(batch.values()))
    ddb.update_table(
        TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    return count


def apply_change(ddb: Any, table: str, record: StreamRecord) -> None:
    """A fixture record as a write to the table: INSERT/MODIFY put the new image, REMOVE deletes."""
    if record.event_name is EventName.REMOVE:
        ddb.delete_item(TableName=table, Key=encode_item(record.keys, "bytes"))
        return
    new = record.new_image
    if new is None:
        raise RecordError("needs the new image to write it to the table", field="dynamodb.NewImage")
    ddb.put_item(TableName=table, Item=encode_item(new, "bytes"))


def _boto(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB JSON (binary as base64 text) as boto3 takes it (binary as bytes)."""
    return encode_item(decode_item(item, "Item"), "bytes")


def _write_batch(ddb: Any, table: str, batch: list[dict[str, Any]]) -> None:
    pending = {table: batch}
    for _ in range(10):
        left = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        if not left:
            return
        pending = left
    raise FatalError(f"loading {table}: items left unprocessed after 10 attempts")


def race(backfill: Any, writes: Sequence[Callable[[], None]], *, rounds: int | None = None) -> None:
    """Scan every segment to its end, running a share of ``writes`` after each round of pages
    (one page per open segment); whatever is left is written before the index is closed."""
    progress = backfill.progress
    total_pages = max(1, sum(1 for s in progress.segments if not s.done))
    estimate = rounds or max(1, backfill.estimate // max(1, backfill.options.page_items * total_pages) + 1)
    share = max(1, -(-len(writes) // estimate))
    todo = list(writes)
    open_segments = [i for i, s in enumerate(progress.segments) if not s.done]
    while open_segments:
        open_segments = [i for i in open_segments if backfill.scan_page(i)]
        for write in todo[:share]:
            write()
        del todo[:share]
    for write in todo:
        write()
    backfill.close_index()


def summary(backfill: Any, ddb: Any, table: str, loaded: int) -> dict[str, Any]:
    """The ``backfill`` section of a local run's report."""
    progress = backfill.progress
    final = sum(page.get("Count", 0) for page in ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT"))
    return {
        "items_loaded": loaded,
        "final_items": final,
        "scanned": progress.scanned,
        "changed_during_scan": progress.changed,
        "snapshot_records": progress.extra.get("snapshot_records", 0),
        "consumed_rcu": round(progress.consumed_rcu, 1),
    }
