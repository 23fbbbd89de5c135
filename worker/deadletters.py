"""Dead letters: parked records as JSON Lines, in S3 or a local directory.

Each line holds the error, where it happened, which sink refused it (``null``
for decode errors, which concern every sink), what a replay needs (the
record's ``shard_id`` and ``sequence_number``, when known) and the full
original record, so a fixed worker can replay it: ``worker local --fixtures
<dead-letter file>`` feeds each line's record to the sink it names only (every
sink for ``null``), marked as a replay, so no sink that applied the record the
first time applies it again (see :attr:`worker.diff.Change.replayed`). A line
with ``applied: true`` (the sink parked the record for the operator's attention
but applied it by its documented rule, e.g. a non-number under a sum counted as
0) is not replayed.

Writing a line never fails on a record: when the decoded record cannot be
encoded as JSON (nested deeper than the encoder allows, text that is not
UTF-8), the line holds ``record: null`` and ``record_base64``: the record's
bytes as delivered (or, for a source that delivered parsed objects, the
standard library's JSON of them, or their ``repr``), base64-encoded.

Objects are named by a hash of the parked records' places: a redelivered batch
parks the same records under the same name and overwrites its own earlier
object instead of duplicating it. With other batch boundaries a record may be
parked twice; entries carry ``event_id``/``where`` to tell.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.aws import classify_s3
from worker.errors import RecordError
from worker.files import write_atomic
from worker.records import json_default, to_json

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["LocalDeadLetters", "S3DeadLetters", "entry"]


def entry(error: RecordError, now: dt.datetime) -> dict[str, Any]:
    payload = error.payload
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    event_id = payload.get("eventID") if isinstance(payload, dict) else None
    event_id = event_id if isinstance(event_id, str) else None
    shard, sequence = _position(error, payload)
    return {
        "parked_at": now.isoformat(),
        "where": error.where,
        "sink": error.sink,
        "field": error.field,
        "error": error.reason,
        "event_id": event_id,
        "shard_id": shard,
        "sequence_number": sequence,
        "applied": error.applied,
        "record": payload,
    }


def _position(error: RecordError, payload: Any) -> tuple[str | None, str | None]:
    """The record's shard and sequence number: as the pipeline set them, else read from
    the record and its place (``shard/sequence``)."""
    sequence = error.sequence_number
    if sequence is None and isinstance(payload, Mapping):
        ddb = payload.get("dynamodb")
        seq = ddb.get("SequenceNumber") if isinstance(ddb, Mapping) else None
        sequence = seq if isinstance(seq, str) else None
    shard = error.shard_id
    if shard is None and sequence is not None and error.where.endswith(f"/{sequence}"):
        shard = error.where[: -len(sequence) - 1] or None
    return shard, sequence


def render_line(error: RecordError, now: dt.datetime) -> bytes:
    """One dead-letter line; never raises for any record (see the module docstring)."""
    line = entry(error, now)
    try:
        return to_json(line)
    except Exception as exc:  # orjson: too deep, not UTF-8, an unknown type
        line["record"] = None
        line["record_base64"] = base64.b64encode(_raw_bytes(error)).decode("ascii")
        line["record_note"] = f"the record could not be written as JSON ({exc}); record_base64 holds it"
        return to_json({k: _safe(v) for k, v in line.items()})


def _safe(v: Any) -> Any:
    """Text that encodes as UTF-8 whatever it holds (lone surrogates escaped)."""
    if isinstance(v, str):
        return v.encode("utf-8", "backslashreplace").decode("utf-8")
    return v


def _raw_bytes(error: RecordError) -> bytes:
    raw = error.raw
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    try:
        return json.dumps(error.payload, default=json_default).encode("utf-8", "surrogatepass")
    except Exception:
        return repr(error.payload).encode("utf-8", "backslashreplace")


class _Buffered:
    def __init__(self, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.pending: list[RecordError] = []
        self.written = 0  # entries made durable since start

    def park(self, error: RecordError) -> None:
        self.pending.append(error)

    def _render(self) -> tuple[str, bytes]:
        now = self.clock()
        lines = [render_line(e, now) for e in self.pending]
        digest = hashlib.sha256("\n".join(e.where for e in self.pending).encode()).hexdigest()[:20]
        name = f"dt={now:%Y-%m-%d}/{digest}-{len(lines)}.jsonl"
        return name, b"\n".join(lines) + b"\n"

    def close(self) -> None:
        self.pending.clear()


class LocalDeadLetters(_Buffered):
    """Writes to a directory; the file is fsync'ed and renamed into place (atomic)."""

    def __init__(self, directory: str | os.PathLike[str], clock: Callable[[], dt.datetime] | None = None) -> None:
        super().__init__(clock)
        self.directory = Path(directory)

    def flush(self) -> None:
        if not self.pending:
            return
        name, body = self._render()
        write_atomic(self.directory / name, body)
        self.written += len(self.pending)
        self.pending.clear()


class S3DeadLetters(_Buffered):
    """Writes one object per flush under ``s3://bucket/prefix``; S3 puts are atomic."""

    def __init__(self, s3: S3Client, bucket: str, prefix: str, clock: Callable[[], dt.datetime] | None = None) -> None:
        super().__init__(clock)
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def flush(self) -> None:
        if not self.pending:
            return
        name, body = self._render()
        try:
            self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{name}", Body=body)
        except Exception as exc:  # classified like the archive's writes: no bucket or no permission stops
            raise classify_s3(exc, f"dead letters: put s3://{self.bucket}/{self.prefix}{name}") from exc
        self.written += len(self.pending)
        self.pending.clear()
