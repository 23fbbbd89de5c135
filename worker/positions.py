"""The pipeline's bookkeeping of records not yet durable, kept without a Python object per record.

A sink that writes on its own cadence (the archive writes an object once, at
rotation) leaves thousands of records unflushed; the pipeline remembers each
one's ordinal, arrival time and source position until it is reported. Kept as
tuples, those small objects live much longer than the batch that made them and
pin the allocator's arenas the batch's garbage would otherwise free (a shard
process grew by about 2 MiB per 1,000 records until the archive rotated).
These queues keep the same facts in flat arrays: a few large buffers.

Both are first-in first-out; consumed entries are dropped in bulk.
"""

from __future__ import annotations

from array import array

__all__ = ["AddLog", "PositionLog"]

_COMPACT = 4096  # consumed entries kept before the arrays are cut (amortized O(1) per entry)


class PositionLog:
    """``(ordinal, shard, position)`` of each record, in ordinal order, until reported."""

    __slots__ = ("_ends", "_head", "_index", "_names", "_ordinals", "_shards", "_text")

    def __init__(self) -> None:
        self._ordinals = array("q")
        self._shards = array("l")  # index into _names
        self._ends = array("q")  # end offset of each position's text in _text
        self._text = bytearray()
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._head = 0

    def __len__(self) -> int:
        return len(self._ordinals) - self._head

    def append(self, ordinal: int, shard: str, position: str) -> None:
        i = self._index.get(shard)
        if i is None:
            i = self._index[shard] = len(self._names)
            self._names.append(shard)
        self._ordinals.append(ordinal)
        self._shards.append(i)
        self._text += position.encode("utf-8")
        self._ends.append(len(self._text))

    def pop_upto(self, ordinal: int) -> dict[str, str]:
        """Remove every entry up to ``ordinal``; the last position of each shard among them
        (shards in the order they first appear)."""
        ordinals, shards, head, end = self._ordinals, self._shards, self._head, len(self._ordinals)
        last: dict[int, int] = {}
        while head < end and ordinals[head] <= ordinal:
            last[shards[head]] = head
            head += 1
        out = {self._names[s]: self._position(k) for s, k in last.items()}
        self._head = head
        if head >= _COMPACT and head * 2 >= end:
            self._cut()
        return out

    def clear(self) -> None:
        self._ordinals, self._shards, self._ends = array("q"), array("l"), array("q")
        self._text = bytearray()
        self._head = 0

    def _position(self, k: int) -> str:
        start = self._ends[k - 1] if k > 0 else 0
        return self._text[start : self._ends[k]].decode("utf-8")

    def _cut(self) -> None:
        head = self._head
        offset = self._ends[head - 1]
        del self._text[:offset]
        self._ordinals = self._ordinals[head:]
        self._shards = self._shards[head:]
        self._ends = array("q", (e - offset for e in self._ends[head:]))
        self._head = 0


class AddLog:
    """``(ordinal, added at)`` of a sink's adds since its last durable point, oldest first."""

    __slots__ = ("_head", "_ordinals", "_times")

    def __init__(self) -> None:
        self._ordinals = array("q")
        self._times = array("d")
        self._head = 0

    def __len__(self) -> int:
        return len(self._ordinals) - self._head

    def append(self, ordinal: int, at: float) -> None:
        self._ordinals.append(ordinal)
        self._times.append(at)

    def oldest_time(self) -> float:
        """When the oldest entry was added (the log must not be empty)."""
        return self._times[self._head]

    def keep_newest(self, n: int) -> int | None:
        """Drop all but the newest ``n`` entries; the ordinal of the newest dropped (``None``: none)."""
        drop = len(self) - n
        if drop <= 0:
            return None
        self._head += drop
        newest = self._ordinals[self._head - 1]
        if self._head >= _COMPACT and self._head * 2 >= len(self._ordinals):
            self._ordinals = self._ordinals[self._head :]
            self._times = self._times[self._head :]
            self._head = 0
        return newest

    def clear(self) -> None:
        self._ordinals, self._times = array("q"), array("d")
        self._head = 0


class AckLog:
    """``(sequence, subsequence, created)`` of the records a KCL shard process added but has
    not checkpointed, oldest first (``subsequence`` ``None`` or a non-negative int)."""

    __slots__ = ("_created", "_ends", "_head", "_subs", "_text")

    def __init__(self) -> None:
        self._text = bytearray()
        self._ends = array("q")
        self._subs = array("q")  # -1: None
        self._created = array("d")
        self._head = 0

    def __len__(self) -> int:
        return len(self._ends) - self._head

    def append(self, sequence: str, sub: int | None, created: float) -> None:
        self._text += sequence.encode("utf-8")
        self._ends.append(len(self._text))
        self._subs.append(-1 if sub is None else sub)
        self._created.append(created)

    def pop_through(self, sequence: str) -> tuple[str, int | None, float] | None:
        """Drop the entries before the first one for ``sequence`` and return that one, removed;
        ``None`` when no entry has it (the log is then empty)."""
        want = sequence.encode("utf-8")
        for k in range(self._head, len(self._ends)):
            if self._sequence_bytes(k) == want:
                self._head = k + 1
                entry = self._entry(k)
                if self._head >= _COMPACT and self._head * 2 >= len(self._ends):
                    self._cut()
                return entry
        self.clear()
        return None

    def last_of(self, sequence: str) -> tuple[str, int | None, float] | None:
        """The newest entry for ``sequence`` (``None``: none)."""
        want = sequence.encode("utf-8")
        for k in range(len(self._ends) - 1, self._head - 1, -1):
            if self._sequence_bytes(k) == want:
                return self._entry(k)
        return None

    def clear(self) -> None:
        self._text, self._ends, self._subs, self._created = bytearray(), array("q"), array("q"), array("d")
        self._head = 0

    def _sequence_bytes(self, k: int) -> bytes:
        start = self._ends[k - 1] if k > 0 else 0
        return bytes(self._text[start : self._ends[k]])

    def _entry(self, k: int) -> tuple[str, int | None, float]:
        sub = self._subs[k]
        return self._sequence_bytes(k).decode("utf-8"), None if sub < 0 else sub, self._created[k]

    def _cut(self) -> None:
        head = self._head
        offset = self._ends[head - 1]
        del self._text[:offset]
        self._ends = array("q", (e - offset for e in self._ends[head:]))
        self._subs = self._subs[head:]
        self._created = self._created[head:]
        self._head = 0
