"""Fixture files: JSON Lines or one JSON document, any record shape, optionally gzip.

Accepted per line (or as the whole document):

* one record of any shape :func:`worker.decode.decode` knows;
* a container: a Lambda event or GetRecords page (``{"Records": [...]}``) or a
  multilang ``processRecords`` message (``{"records": [...]}``);
* an archive line (``{"shard_id": ..., "record": {...}}``) or a dead letter
  (``{"error": ..., "record": {...}}``), so archives and parked records replay.
  A dead letter replays under its own shard id, to the sink it names only
  (every sink when it names none), marked as a replay
  (:attr:`worker.records.RawRecord.replay_sinks`); ``record_base64`` (a record
  the writer could not encode as JSON) is decoded from its bytes.

Every record is tagged ``path:line`` (``path:line#i`` inside a container); a
line that is not JSON becomes a record whose decode fails with that place, so
it is parked like any other bad record instead of stopping the run.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from worker.decode import expand
from worker.errors import FatalError
from worker.records import RawRecord


def read(paths: Iterable[str | os.PathLike[str]]) -> Iterator[RawRecord]:
    for path in paths:
        yield from read_file(path)


def read_file(path: str | os.PathLike[str]) -> Iterator[RawRecord]:
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise FatalError(f"{name}: cannot read the fixture file: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile, truncated, corrupt data
            raise FatalError(f"{name}: not a readable gzip file (corrupt or truncated): {exc}") from None
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
        if isinstance(item, dict) and "error" in item and "dynamodb" not in item and "parked_at" in item:
            if item.get("applied") is not True:  # applied anyway by its sink: nothing to replay
                yield _dead_letter(item, where)
            continue
        shard = None
        record = item
        if isinstance(item, dict) and isinstance(item.get("record"), dict) and "dynamodb" not in item:
            shard = item.get("shard_id") if isinstance(item.get("shard_id"), str) else None
            record = item["record"]
        yield RawRecord(record, where, shard)


def _dead_letter(line: dict[str, Any], where: str) -> RawRecord:
    """A dead-letter line as the record to replay, for the sink that parked it."""
    shard = line.get("shard_id") if isinstance(line.get("shard_id"), str) else None
    sink = line.get("sink")
    sinks = (sink,) if isinstance(sink, str) else ()
    record: Any = line.get("record")
    encoded = line.get("record_base64")
    if record is None and isinstance(encoded, str):
        try:
            record = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            record = encoded  # decoding it fails and parks it again, with this place
    elif isinstance(record, str):
        record = record.encode("utf-8", "surrogatepass")  # a record that was not JSON: parsed again
    return RawRecord(record if record is not None else b"null", where, shard, replay_sinks=sinks)
