"""Dead letters: parked records as JSON Lines, in S3 or a local directory.

Each line holds the error, where it happened, which sink refused it (``null``
for decode errors, which concern every sink) and the full original record, so a
fixed worker can replay it (``worker local --fixtures`` reads these lines
back via their ``record`` field).

Objects are named by a hash of the parked records' places: a redelivered batch
parks the same records under the same name and overwrites its own earlier
object instead of duplicating it. With other batch boundaries a record may be
parked twice; entries carry ``event_id``/``where`` to tell.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.aws import classify_s3
from worker.errors import RecordError
from worker.files import write_atomic
from worker.records import to_json

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["LocalDeadLetters", "S3DeadLetters", "entry"]


def entry(error: RecordError, now: dt.datetime) -> dict[str, Any]:
    payload = error.payload
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    event_id = payload.get("eventID") if isinstance(payload, dict) else None
    return {
        "parked_at": now.isoformat(),
        "where": error.where,
        "sink": error.sink,
        "field": error.field,
        "error": error.reason,
        "event_id": event_id,
        "record": payload,
    }


class _Buffered:
    def __init__(self, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.pending: list[RecordError] = []
        self.written = 0  # entries made durable since start

    def park(self, error: RecordError) -> None:
        self.pending.append(error)

    def _render(self) -> tuple[str, bytes]:
        now = self.clock()
        lines = [to_json(entry(e, now)) for e in self.pending]
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
