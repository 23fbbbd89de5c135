"""The synthetic workload of every benchmark: a seeded, deterministic stream of order items.

Each item is about 1 KB (the JSON of its image, which is what
``worker.shapes.build`` records as ``SizeBytes``) with 16 top-level attributes:
strings, numbers, a bool, a null, a binary checksum, a string set, a number set,
a nested map (``customer.address``), a small map (``shipping``) and a list of
maps (``lines``).

The stream is 20% INSERT, 70% MODIFY, 10% REMOVE over a pool of live items,
like a real table: a MODIFY changes 1-3 attributes of an existing item (some
nested, e.g. ``lines[1].qty`` or ``customer.address.city``; every change really
changes a value, so no MODIFY is a no-op) and a REMOVE deletes one. Records are
canonical (``worker.shapes.build``) and rendered with ``worker.shapes.render`` as
the KCL adapter's JSON text and as multilang records (base64 of that JSON).

Same ``(n, seed)``, same bytes: every stack of a benchmark reads the same input.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from worker.records import RawRecord
from worker.shapes import build, render

# Each block of ten records holds exactly this many of each event, in a seeded order.
MIX = {"INSERT": 2, "MODIFY": 7, "REMOVE": 1}
SHARD_ID = "shardId-00000001700000000000-bench0001"
FIRST_SEQUENCE = 49_000_000_000_000_000_000  # 23 digits, like real stream sequence numbers
FIRST_SECOND = 1_763_780_400
WARM_ITEMS = 50  # items that exist before the stream starts (a warm table)

_CITIES = ("Lyon", "Osaka", "Austin", "Porto", "Leeds", "Perth", "Quito", "Turku", "Dakar", "Cusco")
_TIERS = ("bronze", "silver", "gold", "platinum")
_STATUSES = ("new", "paid", "packed", "shipped", "delivered", "returned")
_TAGS = ("gift", "express", "fragile", "b2b", "promo", "repeat", "eu", "vip", "bulk", "digital")
_METHODS = ("ground", "air", "pickup", "locker")


def _word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(lo, hi)))


def _money(rng: random.Random, lo: int, hi: int) -> Decimal:
    return Decimal(rng.randint(lo * 100, hi * 100)).scaleb(-2)


def _line(rng: random.Random) -> dict[str, Any]:
    return {
        "sku": f"SKU-{rng.randint(10000, 99999)}",
        "title": f"{_word(rng, 4, 9)} {_word(rng, 4, 9)}",
        "qty": Decimal(rng.randint(1, 5)),
        "price": _money(rng, 2, 300),
    }


def new_item(rng: random.Random, n: int, created: int) -> dict[str, Any]:
    """A fresh order item (~1 KB of image JSON) with key ``pk``/``sk``."""
    lines = [_line(rng) for _ in range(rng.randint(2, 3))]
    total = sum((x["qty"] * x["price"] for x in lines), Decimal(0))
    return {
        "pk": f"order#{n:08d}",
        "sk": "order",
        "status": "new",
        "customer": {
            "id": f"cust#{rng.randint(1, 50000):06d}",
            "name": f"{_word(rng, 3, 8).title()} {_word(rng, 4, 10).title()}",
            "email": f"{_word(rng, 5, 10)}@example.com",
            "tier": rng.choice(_TIERS),
            "address": {
                "street": f"{rng.randint(1, 999)} {_word(rng, 5, 10).title()} Street",
                "city": rng.choice(_CITIES),
                "zip": f"{rng.randint(10000, 99999)}",
                "country": rng.choice(("FR", "JP", "US", "PT", "GB", "AU")),
            },
        },
        "lines": lines,
        "tags": frozenset(rng.sample(_TAGS, rng.randint(1, 3))),
        "scores": frozenset(Decimal(rng.randint(1, 100)) for _ in range(3)),
        "total": total,
        "created_at": Decimal(created),
        "updated_at": Decimal(created),
        "version": Decimal(1),
        "paid": False,
        "coupon": None,
        "checksum": rng.randbytes(16),
        "shipping": {
            "method": rng.choice(_METHODS),
            "cost": _money(rng, 0, 25),
            "eta_days": Decimal(rng.randint(1, 9)),
        },
        "notes": _notes(rng),
    }


def _other(rng: random.Random, choices: tuple[str, ...], current: str) -> str:
    return rng.choice([c for c in choices if c != current])


def _mutate(rng: random.Random, item: dict[str, Any], what: str) -> None:
    """Change one attribute (or one nested value) of ``item`` in place; the value always differs."""
    if what == "status":
        item["status"] = _other(rng, _STATUSES, item["status"])
    elif what == "paid":
        item["paid"] = not item["paid"]
    elif what == "qty":  # a value in a list of maps: lines[i].qty
        lines = [dict(x) for x in item["lines"]]
        i = rng.randrange(len(lines))
        lines[i]["qty"] += rng.randint(1, 3)
        item["lines"] = lines
    elif what == "city":  # a value two maps deep: customer.address.city
        customer = dict(item["customer"])
        address = dict(customer["address"])
        address["city"] = _other(rng, _CITIES, address["city"])
        customer["address"] = address
        item["customer"] = customer
    elif what == "tags":
        tags = set(item["tags"])
        spare = [t for t in _TAGS if t not in tags]
        if spare and (len(tags) < 2 or rng.random() < 0.5):
            tags.add(rng.choice(spare))
        else:
            tags.discard(rng.choice(sorted(tags)))
        item["tags"] = frozenset(tags)
    elif what == "shipping":
        item["shipping"] = {**item["shipping"], "method": _other(rng, _METHODS, item["shipping"]["method"])}
    elif what == "line":  # the list grows or shrinks by one map (items keep their size)
        lines = item["lines"]
        item["lines"] = [*lines, _line(rng)] if len(lines) < 4 else lines[:-1]
    elif what == "notes":
        item["notes"] = _notes(rng)
    elif what == "total":
        item["total"] = item["total"] + _money(rng, 1, 20)
    else:
        raise ValueError(what)


_MUTATIONS = ("status", "paid", "qty", "city", "tags", "shipping", "line", "notes", "total")


def _notes(rng: random.Random) -> str:
    return " ".join(_word(rng, 3, 9) for _ in range(rng.randint(4, 10)))


def _events(rng: random.Random, n: int) -> Iterator[str]:
    """Event names in blocks of ten holding exactly :data:`MIX`, each block shuffled."""
    block = [name for name, count in MIX.items() for _ in range(count)]
    for start in range(0, n, len(block)):
        rng.shuffle(block)
        yield from block[: n - start]


def canonical_records(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``n`` canonical records (wire JSON dicts), deterministic for ``(n, seed)``."""
    rng = random.Random(seed)
    pool: dict[str, dict[str, Any]] = {}
    order: list[str] = []  # live keys; a list so that choices are deterministic
    for w in range(WARM_ITEMS):
        item = new_item(rng, w, FIRST_SECOND - 3600)
        pool[item["pk"]] = item
        order.append(item["pk"])
    created = WARM_ITEMS
    for i, event in enumerate(_events(rng, n)):
        seq = FIRST_SEQUENCE + i * 10
        when = FIRST_SECOND + i // 50  # 50 records per second of stream time
        if event == "INSERT" or not order:
            item = new_item(rng, created, when)
            created += 1
            pool[item["pk"]] = item
            order.append(item["pk"])
            yield build("INSERT", _key(item), new=item, sequence=seq, created=when)
            continue
        idx = rng.randrange(len(order))
        pk = order[idx]
        old = pool[pk]
        if event == "REMOVE":
            order[idx] = order[-1]
            order.pop()
            del pool[pk]
            yield build("REMOVE", _key(old), old=old, sequence=seq, created=when)
            continue
        new = dict(old)
        for what in rng.sample(_MUTATIONS, rng.randint(1, 3)):
            _mutate(rng, new, what)
        # Part of the same write, as an application would do it; not counted among the 1-3 changes.
        new["version"] = old["version"] + 1
        new["updated_at"] = Decimal(when)
        pool[pk] = new
        yield build("MODIFY", _key(old), old=old, new=new, sequence=seq, created=when)


def _key(item: dict[str, Any]) -> dict[str, Any]:
    return {"pk": item["pk"], "sk": item["sk"]}


@dataclass(frozen=True)
class Workload:
    """The same records as adapter JSON text and as multilang records (parsed, as kclpy hands them over).

    Only these compact forms are kept: :class:`RawRecord` objects are made as a
    source makes them, one batch at a time, so that a benchmark's heap holds
    what a worker's does (the current batch) and not the whole workload.
    """

    adapter: list[bytes]
    multilang: list[dict[str, Any]]
    events: list[str]
    shard_id: str = SHARD_ID

    def __len__(self) -> int:
        return len(self.adapter)

    def adapter_records(self) -> Iterator[RawRecord]:
        """Adapter JSON text as the pipeline's input, one record at a time."""
        shard = self.shard_id
        for text, m in zip(self.adapter, self.multilang, strict=True):
            yield RawRecord(text, f"{shard}/{m['sequenceNumber']}", shard)

    def multilang_batches(self, size: int = 1000) -> Iterator[list[RawRecord]]:
        """Multilang records (``data`` = base64 adapter JSON) in batches, as the KCL source hands them over."""
        shard = self.shard_id
        for chunk in batches(self.multilang, size):
            yield [RawRecord(m, f"{shard}/{m['sequenceNumber']}", shard) for m in chunk]

    def raw_adapter(self) -> list[RawRecord]:
        """Every record as adapter JSON text, at once."""
        return list(self.adapter_records())

    def raw_multilang(self) -> list[RawRecord]:
        """Every record as a multilang record, at once."""
        return [r for batch in self.multilang_batches() for r in batch]


def generate(n: int, seed: int = 1) -> Workload:
    """The workload: ``n`` records in both renderings, deterministic for ``(n, seed)``."""
    adapter: list[bytes] = []
    multilang: list[dict[str, Any]] = []
    events: list[str] = []
    for canon in canonical_records(n, seed):
        adapter.append(orjson.dumps(render(canon, "adapter")))
        multilang.append(render(canon, "multilang"))
        events.append(canon["eventName"])
    return Workload(adapter, multilang, events)


def batches(items: list[Any], size: int = 1000) -> list[list[Any]]:
    """``items`` cut into batches of ``size`` (KCL's default ``maxRecords`` is 1,000)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
