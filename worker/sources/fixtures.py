"""Fixture files: JSON Lines or one JSON document, any record shape, optionally gzip.

Accepted per line (or as the whole document):

* one record of any shape :func:`worker.decode.decode` knows;
* a container: a Lambda event or GetRecords page (``{"Records": [...]}``) or a
  multilang ``processRecords`` message (``{"records": [...]}``);
* an archive line (``{"shard_id": ..., "record": {...}}``) or a dead letter
  (``{"error": ..., "record": {...}}``), so archives and parked records replay.

Every record is tagged ``path:line`` (``path:line#i`` inside a container); a
line that is not JSON becomes a record whose decode fails with that place, so
it is parked like any other bad record instead of stopping the run.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from worker.decode import expand
from worker.records import RawRecord


def read(paths: Iterable[str | os.PathLike[str]]) -> Iterator[RawRecord]:
    for path in paths:
        yield from read_file(path)


def read_file(path: str | os.PathLike[str]) -> Iterator[RawRecord]:
    name = os.fspath(path)
    data = Path(name).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"[") and b"\n" in stripped.rstrip():
        # A pretty-printed document (a Lambda event, a CLI page) spans lines.
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None  # JSON Lines after all
        if doc is not None:
            yield from _records(doc, name, None)
            return
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield RawRecord(line, where)  # decode will park it with the JSON error
            continue
        yield from _records(obj, name, lineno)


def _records(obj: Any, name: str, lineno: int | None) -> Iterator[RawRecord]:
    """Records of one line (``lineno``) or of a whole document (``None``)."""
    items = list(expand(obj)) if isinstance(obj, dict) else obj if isinstance(obj, list) else [obj]
    single = len(items) == 1 and items[0] is obj
    place = f"{name}:{lineno}" if lineno is not None else name
    for i, item in enumerate(items):
        where = place if single else f"{place}#Records[{i}]"
        shard = None
        record = item
        if isinstance(item, dict) and isinstance(item.get("record"), dict) and "dynamodb" not in item:
            shard = item.get("shard_id") if isinstance(item.get("shard_id"), str) else None
            record = item["record"]
        yield RawRecord(record, where, shard)
