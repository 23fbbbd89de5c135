"""The diff: a pure function from a :class:`StreamRecord` to a :class:`Change`.

Changed paths use dots for map keys and brackets for list indexes
(``ship.city``, ``lines[2].qty``). Sets compare as sets. Values of different
DynamoDB types always differ (``true`` is not ``1``); numbers compare by value
(``1.0`` equals ``1``), as DynamoDB does. A MODIFY whose images are equal is a
no-op: ``changed`` is empty and :attr:`Change.noop` is true.

Only top-level attributes whose raw values differ are decoded and walked, so an
unchanged 1 KB item costs one dict comparison per attribute.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from worker.attributes import Item, Value
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
        return self.kind is ChangeKind.MODIFY and not self.changed

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
