"""The diff: a pure function from a :class:`StreamRecord` to a :class:`Change`.

Changed paths use dots for map keys and brackets for list indexes
(``ship.city``, ``lines[2].qty``). Sets compare as sets. Values of different
DynamoDB types always differ (``true`` is not ``1``); numbers compare by value
(``1.0`` equals ``1``), as DynamoDB does. A MODIFY whose images are equal is a
no-op: ``changed`` is empty and :attr:`Change.noop` is true. A MODIFY or REMOVE
without any image (both ``{}`` or absent: a stream whose view type is not
NEW_AND_OLD_IMAGES) is *not* a no-op: nothing is known of what changed, so a sink
that needs the images parks it (:func:`image_missing`) instead of dropping it.

Only top-level attributes whose raw values differ are decoded and walked, so an
unchanged 1 KB item costs one dict comparison per attribute.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from worker.attributes import Item, Value
from worker.errors import RecordError
from worker.records import EventName, StreamRecord


class ChangeKind(enum.Enum):
    INSERT = "insert"
    MODIFY = "modify"
    REMOVE = "remove"
    TTL_EXPIRE = "ttl-expire"


@dataclass(frozen=True, slots=True)
class Change:
    """What one record did to one item. Images decode lazily through the record."""

    kind: ChangeKind
    record: StreamRecord
    changed: tuple[str, ...]
    # A dead letter replayed (``worker local --fixtures <dead letters>``): it reaches only the
    # sinks that parked it, which must apply it although its sequence may be below their marks.
    replayed: bool = False

    @property
    def key(self) -> Item:
        return self.record.keys

    @property
    def old(self) -> Item | None:
        return self.record.old_image

    @property
    def new(self) -> Item | None:
        return self.record.new_image

    @property
    def noop(self) -> bool:
        return self.kind is ChangeKind.MODIFY and not self.changed and not self.imageless

    @property
    def imageless(self) -> bool:
        """True when the record carries neither image (a KEYS_ONLY stream, or images ``{}``)."""
        record = self.record
        return not record.has_old_image and not record.has_new_image

    @property
    def deleted(self) -> bool:
        return self.kind is ChangeKind.REMOVE or self.kind is ChangeKind.TTL_EXPIRE


def diff(record: StreamRecord) -> Change:
    """The change a record describes. Pure: same record, same change."""
    ev = record.event_name
    if ev is EventName.INSERT:
        return Change(ChangeKind.INSERT, record, tuple(record.attribute_names(new=True)))
    if ev is EventName.REMOVE:
        kind = ChangeKind.TTL_EXPIRE if record.ttl_delete else ChangeKind.REMOVE
        return Change(kind, record, tuple(record.attribute_names(new=False)))
    # Only the parts whose raw values differ are decoded, and handed to _walk.
    return Change(ChangeKind.MODIFY, record, tuple(record.changed_paths(_walk)))


def _walk(old: Value, new: Value, path: str, out: list[str]) -> None:
    if type(old) is not type(new):
        out.append(path)
    elif isinstance(old, dict):
        for k, v in new.items():
            sub = f"{path}.{k}"
            if k not in old:
                out.append(sub)
            else:
                _walk(old[k], v, sub, out)
        out.extend(f"{path}.{k}" for k in old if k not in new)
    elif isinstance(old, list):
        common = min(len(old), len(new))
        for i in range(common):
            _walk(old[i], new[i], f"{path}[{i}]", out)
        out.extend(f"{path}[{i}]" for i in range(common, max(len(old), len(new))))
    elif old != new:
        out.append(path)


def diff_items(old: Item | None, new: Item | None) -> list[str]:
    """Changed paths between two decoded items (a helper for tests and tools)."""
    out: list[str] = []
    _walk(old or {}, new or {}, "", out)
    return [p[1:] if p.startswith(".") else p for p in out]


def image_missing(change: Change, image: str, sink: str) -> RecordError:
    """The error that parks a change lacking an image ``sink`` needs (``"old"`` or ``"new"``),
    naming the stream's view type (or its absence) so the operator knows what to fix."""
    view = change.record.view_type
    seen = f"the stream's view type is {view.value}" if view else "the record names no StreamViewType"
    both = " (both images are empty)" if change.imageless else ""
    return RecordError(
        f"{change.kind.value} without its {image} image{both}: {seen}; {sink} needs NEW_AND_OLD_IMAGES",
        field=f"dynamodb.{image.capitalize()}Image",
        sink=sink,
    )
