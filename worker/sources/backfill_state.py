"""Durable progress of one backfill: a state file and append-only spool files.

Layout under ``<state dir>/backfill/<table>-<snapshot id>/``:

* ``state.json``: the snapshot (:class:`~worker.sources.backfill.Snapshot`), per
  segment the scan's next start key, the items and bytes spooled so far and
  whether it is done; whether the change index is closed; the last snapshot
  ordinal every sink made durable; totals (items, consumed read capacity).
  Written atomically (temporary file, fsync, rename).
* ``segment-<i>.jsonl``: the items segment *i* scanned, one DynamoDB-JSON item
  per line, appended page by page (fsync) *before* the state file moves past
  the page. On resume a spool is cut back to the length the state file
  recorded, so a page is in it once, whatever the crash.
* ``changed.jsonl``: the change index: per key changed after the snapshot's
  position, its first change's sequence number and old image (``null`` when
  the item did not exist then), written once when the scan is done.

The spools make the snapshot's records, and so their ordinals, deterministic:
a resumed apply reproduces exactly the records an interrupted one produced.
They take about the table's size on disk, and stay until the state dir is
cleaned (``worker backfill`` reports where).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from worker.errors import FatalError
from worker.files import write_atomic

STATE = "state.json"
CHANGED = "changed.jsonl"


@dataclass
class SegmentProgress:
    """How far one scan segment got: every page up to ``next_key`` is in its spool."""

    next_key: dict[str, Any] | None = None
    items: int = 0
    bytes: int = 0
    done: bool = False


@dataclass
class Progress:
    """Everything a resumed backfill needs (see the module docstring)."""

    snapshot: dict[str, Any]
    segments: list[SegmentProgress]
    index_closed: bool = False
    changed: int = 0
    applied: int = 0  # the last ordinal made durable in every sink
    complete: bool = False
    consumed_rcu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scanned(self) -> int:
        return sum(s.items for s in self.segments)


class Workdir:
    """The files of one backfill (one snapshot of one table)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def state_path(self) -> Path:
        return self.path / STATE

    def segment_path(self, segment: int) -> Path:
        return self.path / f"segment-{segment}.jsonl"

    @property
    def changed_path(self) -> Path:
        return self.path / CHANGED

    def load(self) -> Progress | None:
        try:
            data = orjson.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise FatalError(f"cannot read backfill state {self.state_path}: {exc}") from exc
        return Progress(
            snapshot=data["snapshot"],
            segments=[SegmentProgress(**s) for s in data["segments"]],
            index_closed=bool(data.get("index_closed")),
            changed=int(data.get("changed", 0)),
            applied=int(data.get("applied", 0)),
            complete=bool(data.get("complete")),
            consumed_rcu=float(data.get("consumed_rcu", 0.0)),
            extra=dict(data.get("extra", {})),
        )

    def save(self, progress: Progress) -> None:
        body = {
            "snapshot": progress.snapshot,
            "segments": [s.__dict__ for s in progress.segments],
            "index_closed": progress.index_closed,
            "changed": progress.changed,
            "applied": progress.applied,
            "complete": progress.complete,
            "consumed_rcu": round(progress.consumed_rcu, 3),
            "extra": progress.extra,
        }
        write_atomic(self.state_path, orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def cut_spool(self, segment: int, length: int) -> None:
        """Drop whatever a crashed page left past ``length`` bytes."""
        path = self.segment_path(segment)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.truncate(length)

    def append(self, segment: int, items: list[dict[str, Any]]) -> int:
        """Append one page of items (fsync'ed); returns the bytes written."""
        data = b"".join(orjson.dumps(item) + b"\n" for item in items)
        with open(self.segment_path(segment), "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return len(data)

    def write_changed(self, entries: list[dict[str, Any]]) -> None:
        write_atomic(self.changed_path, b"".join(orjson.dumps(e) + b"\n" for e in entries))

    def read_lines(self, path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The JSON lines of a spool (the first ``limit`` bytes only, if given)."""
        if not path.exists():
            return
        with open(path, "rb") as fh:
            data = fh.read() if limit is None else fh.read(limit)
        for n, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise FatalError(f"{path}:{n}: damaged backfill spool line: {exc}") from exc
