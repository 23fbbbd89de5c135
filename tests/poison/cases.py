"""The poison-record corpus: good records in the shapes users already have, interleaved with
bad ones, each with the sinks that must park it (written by hand, from the rules, not the code).

``python -m tests.poison.cases`` rewrites ``corpus.jsonl`` beside this file; the test checks
that the committed file is current, then runs it through ``worker local``.

Good records carry no ``ApproximateCreationDateTime`` (the Lambda console's test event has
none), short sequence numbers (``"101"``) and ``eventSourceARN`` values that are not stream
ARNs. Line ``n`` has sequence number ``100 + n``, so records stay in stream order.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
CORPUS = HERE / "corpus.jsonl"
DECODE = "decode"  # parked before any sink saw it (the dead letter's sink is null)
AGG, SEARCH = "aggregates", "search"


@dataclass(frozen=True)
class Case:
    name: str
    line: bytes
    parked_by: tuple[str, ...] = ()  # DECODE or sink names; () for a good record


def order(oid: str, status: str, channel: str, city: str, total: dict[str, Any], **extra: Any) -> dict[str, Any]:
    item = {
        "order_id": {"S": oid},
        "status": {"S": status},
        "channel": {"S": channel},
        "total": total,
        "ship": {"M": {"city": {"S": city}}},
    }
    item.update(extra)
    return item


def record(seq: int, event: str, oid: str, *, old: Any = None, new: Any = None, **ddb: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Keys": {"order_id": {"S": oid}}, "SequenceNumber": str(seq), "SizeBytes": 100}
    body["StreamViewType"] = "NEW_AND_OLD_IMAGES"
    if old is not None:
        body["OldImage"] = old
    if new is not None:
        body["NewImage"] = new
    body.update(ddb)
    arn = "arn:aws:dynamodb:us-east-1:000000000000:table/Orders" if seq % 2 else "test-event-source"
    return {
        "eventID": f"ev-{seq}",
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": arn,
        "dynamodb": {k: v for k, v in body.items() if v is not None},
    }


def n(text: str) -> dict[str, str]:
    return {"N": text}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "bottom"}
    for _ in range(depth):
        value = {"M": {"next": value}}
    return value


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, obj: Any, *parked_by: str) -> None:
        out.append(Case(name, obj if isinstance(obj, bytes) else json.dumps(obj).encode(), parked_by))

    def seq() -> int:
        return 101 + len(out)

    o1 = order("o-1", "paid", "web", "Paris", n("10.5"))
    o3 = order("o-3", "pending", "web", "Paris", n("7"))
    o4 = order("o-4", "pending", "web", "Lyon", n("3"))
    add("good: insert o-1", record(seq(), "INSERT", "o-1", new=o1))
    add(
        "number beyond DynamoDB's range",
        record(seq(), "INSERT", "o-b1", new=order("o-b1", "paid", "phone", "Oslo", n("1e500"))),
        AGG,
        SEARCH,
    )
    add("good: insert o-2", record(seq(), "INSERT", "o-2", new=order("o-2", "paid", "mobile", "Lyon", n("10.5"))))
    add(
        "number with 40 significant digits",
        record(
            seq(),
            "INSERT",
            "o-b2",
            new=order("o-b2", "paid", "phone", "Oslo", n("1234567890123456789012345678901234567890")),
        ),
        AGG,
        SEARCH,
    )
    add("good: insert o-3", record(seq(), "INSERT", "o-3", new=o3))
    # The index maps `total` as float (from 10.5): the search engine refuses 9.9e125 on its own.
    add(
        "sum near the top of the range",
        record(seq(), "INSERT", "o-b3", new=order("o-b3", "big", "phone", "Oslo", n("9.9E+125"))),
        SEARCH,
    )
    add(
        "sum leaving the range",
        record(seq(), "INSERT", "o-b4", new=order("o-b4", "big", "phone", "Oslo", n("9.9E+125"))),
        AGG,
        SEARCH,
    )
    add(
        "good: modify o-3 pending to paid",
        record(seq(), "MODIFY", "o-3", old=o3, new=order("o-3", "paid", "web", "Paris", n("7"))),
    )
    add(
        "a 38-digit total",
        record(
            seq(),
            "INSERT",
            "w-1",
            new=order("w-1", "wide", "phone", "Oslo", n("99999999999999999999999999999999999999")),
        ),
    )
    add(
        "a sum needing 39 digits",
        record(seq(), "INSERT", "w-2", new=order("w-2", "wide", "phone", "Oslo", n("2"))),
        AGG,
    )
    add(
        "lone surrogate escape (not UTF-8)",
        json.dumps(record(seq(), "INSERT", "o-b5", new=order("o-b5", "paid", "web", "Paris", n("1"))))
        .replace('"paid"', '"pa\\ud800id"')
        .encode(),
        DECODE,
    )
    bad_bytes = json.dumps(record(seq(), "INSERT", "o-b6", new=order("o-b6", "paid", "web", "Paris", n("1")))).encode()
    add("raw bytes that are not UTF-8", bad_bytes.replace(b'"paid"', b'"pa\xff\xfeid"'), DECODE)
    inner = json.dumps(record(seq(), "INSERT", "o-b6m", new=order("o-b6m", "paid", "web", "Paris", n("1")))).encode()
    add(
        "multilang data that is not UTF-8",
        {"data": base64.b64encode(inner.replace(b'"paid"', b'"p\xc3id"')).decode(), "sequenceNumber": str(seq())},
        DECODE,
    )
    add(
        "nested 130 levels",
        record(seq(), "INSERT", "o-b7", new=order("o-b7", "deep", "phone", "Oslo", n("1"), deep=nested(130))),
        SEARCH,  # the index refuses the depth; the archive keeps the record
    )
    add(
        "MODIFY with both images {} (KEYS_ONLY stream)",
        record(seq(), "MODIFY", "o-1", old={}, new={}, StreamViewType="KEYS_ONLY"),
        AGG,
        SEARCH,
    )
    add("MODIFY with no images and no view type", record(seq(), "MODIFY", "o-2", StreamViewType=None), AGG, SEARCH)
    add(
        "REMOVE with both images {}",
        record(seq(), "REMOVE", "o-ghost", old={}, new={}, StreamViewType="KEYS_ONLY"),
        AGG,
    )
    add("good: insert o-4", record(seq(), "INSERT", "o-4", new=o4))
    add(
        "N that is not a number",
        record(seq(), "INSERT", "o-b9", new=order("o-b9", "paid", "phone", "Oslo", n("twelve"))),
        AGG,
        SEARCH,
    )
    add("NaN", record(seq(), "INSERT", "o-b9n", new=order("o-b9n", "paid", "phone", "Oslo", n("NaN"))), AGG, SEARCH)
    add(
        "text under a summed attribute (counts, adds 0)",
        record(seq(), "INSERT", "o-b10", new=order("o-b10", "text", "phone", "Oslo", {"S": "12"})),
        AGG,
    )
    add(
        "B that is not base64",
        record(seq(), "INSERT", "o-b11", new=order("o-b11", "paid", "phone", "Oslo", n("1"), photo={"B": "***"})),
        # aggregates read status, total and ship only: they count it (1 paid, revenue 1)
        SEARCH,
    )
    add(
        "unknown type tag",
        record(seq(), "INSERT", "o-b12", new=order("o-b12", "paid", "phone", "Oslo", n("1"), odd={"X": "1"})),
        # aggregates read status, total and ship only: they count it (1 paid, revenue 1)
        SEARCH,
    )
    add(
        "group too long for a sort key",
        record(seq(), "INSERT", "o-b13", new=order("o-b13", "x" * 1100, "phone", "Oslo", n("1"))),
        AGG,
    )
    add("good: remove o-4", record(seq(), "REMOVE", "o-4", old=o4))
    no_keys = record(seq(), "INSERT", "o-b14", new=order("o-b14", "paid", "web", "Paris", n("1")))
    del no_keys["dynamodb"]["Keys"]
    add("no Keys", no_keys, DECODE)
    upsert = record(seq(), "UPSERT", "o-b15", new=order("o-b15", "paid", "web", "Paris", n("1")))
    add("unknown eventName", upsert, DECODE)
    bad_seq = record(seq(), "INSERT", "o-b16", new=order("o-b16", "paid", "web", "Paris", n("1")))
    bad_seq["dynamodb"]["SequenceNumber"] = "12a"
    add("sequence number not decimal", bad_seq, DECODE)
    bad_time = record(seq(), "INSERT", "o-b17", new=order("o-b17", "paid", "web", "Paris", n("1")))
    bad_time["dynamodb"]["ApproximateCreationDateTime"] = "yesterday"
    add("creation time that is not a time", bad_time, DECODE)
    add("not JSON", b'{"eventName": "INSERT", "dynamodb": {', DECODE)
    add("JSON but not an object", b"42", DECODE)
    add("no dynamodb object", {"eventName": "INSERT", "eventID": "x"}, DECODE)
    return out


def render() -> bytes:
    return b"".join(c.line + b"\n" for c in cases())


if __name__ == "__main__":
    CORPUS.write_bytes(render())
    print(f"wrote {len(cases())} records to {CORPUS}")
