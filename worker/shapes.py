"""Render records in every shape the decoder accepts: fixture conversion, tests, benchmarks.

:func:`build` makes a canonical record (wire JSON: epoch seconds, base64) from
Python items; :func:`render` turns a canonical record into another shape.
Round trip: ``decode(render(build(...), shape))`` equals the built item.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson

from worker.attributes import Item, encode_item
from worker.records import StreamRecord, to_json

Shape = Literal["wire", "adapter", "multilang", "lambda", "cli", "boto3"]
SHAPES: tuple[Shape, ...] = ("wire", "adapter", "multilang", "lambda", "cli", "boto3")

DEFAULT_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/Orders/stream/2026-11-22T00:00:00.000"


def build(
    event: str,
    keys: Mapping[str, Any],
    *,
    old: Item | None = None,
    new: Item | None = None,
    sequence: int | str = 100000000000000000001,
    created: float = 1_763_780_400.0,
    ttl: bool = False,
    event_id: str | None = None,
    view: str = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    """A canonical (wire JSON) record from Python values."""
    seq = str(sequence)
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": float(int(created)),
        "Keys": encode_item(keys),
        "SequenceNumber": seq,
        "SizeBytes": 0,
        "StreamViewType": view,
    }
    if old is not None:
        ddb["OldImage"] = encode_item(old)
    if new is not None:
        ddb["NewImage"] = encode_item(new)
    ddb["SizeBytes"] = len(orjson.dumps(ddb.get("NewImage") or ddb.get("OldImage") or ddb["Keys"]))
    rec: dict[str, Any] = {
        "eventID": event_id or f"ev-{seq[-12:]}",
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": ddb,
    }
    if ttl:
        rec["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
    return rec


def canonical(record: StreamRecord | Mapping[str, Any]) -> dict[str, Any]:
    """Any record (decoded, or parsed in any shape) as canonical wire JSON."""
    obj = record.original() if isinstance(record, StreamRecord) else record
    if "dynamodb" not in obj and isinstance(obj.get("data"), str):
        obj = orjson.loads(base64.b64decode(obj["data"]))
    out: dict[str, Any] = orjson.loads(to_json(obj))
    ddb = out["dynamodb"]
    ts = ddb.get("ApproximateCreationDateTime")
    if isinstance(ts, str):
        try:
            ts = float(ts)
        except ValueError:
            ts = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    if isinstance(ts, int | float) and ts > 1e11:
        ts = ts / 1000
    ddb["ApproximateCreationDateTime"] = float(ts) if ts is not None else None
    ident = out.get("userIdentity")
    if isinstance(ident, Mapping):
        low = {k.lower(): v for k, v in ident.items()}
        out["userIdentity"] = {"PrincipalId": low.get("principalid"), "Type": low.get("type")}
    for img in ("OldImage", "NewImage"):
        if ddb.get(img) == {}:
            del ddb[img]
    out.pop("eventSourceARN", None)
    out.pop("tableName", None)
    return out


def render(canon: Mapping[str, Any], shape: Shape, *, arn: str = DEFAULT_ARN) -> Any:
    """One canonical record in ``shape`` (a dict, or for ``boto3`` a dict with datetimes and bytes)."""
    rec = orjson.loads(orjson.dumps(canon))
    ddb = rec["dynamodb"]
    secs = ddb["ApproximateCreationDateTime"]
    if shape == "wire":
        return rec
    if shape in ("adapter", "multilang"):
        ddb["ApproximateCreationDateTime"] = int(secs * 1000)
        ddb.setdefault("OldImage", {}) if rec["eventName"] == "INSERT" else None
        ddb.setdefault("NewImage", {}) if rec["eventName"] == "REMOVE" else None
        _lower_identity(rec)
        if shape == "adapter":
            return rec
        return {
            "data": base64.b64encode(orjson.dumps(rec)).decode("ascii"),
            "partitionKey": rec["eventID"],
            "sequenceNumber": ddb["SequenceNumber"],
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": int(secs * 1000),
        }
    if shape == "lambda":
        rec["eventSourceARN"] = arn
        _lower_identity(rec)
        return rec
    if shape == "cli":
        ddb["ApproximateCreationDateTime"] = dt.datetime.fromtimestamp(secs, dt.UTC).isoformat()
        return rec
    if shape == "boto3":
        ddb["ApproximateCreationDateTime"] = dt.datetime.fromtimestamp(secs, dt.UTC)
        for img in ("Keys", "OldImage", "NewImage"):
            if img in ddb:
                ddb[img] = _bytes_item(ddb[img])
        return rec
    raise ValueError(f"unknown shape {shape!r}")


def _lower_identity(rec: dict[str, Any]) -> None:
    """Lambda and the adapter spell ``userIdentity`` fields in camelCase."""
    ident = rec.get("userIdentity")
    if ident:
        rec["userIdentity"] = {"principalId": ident["PrincipalId"], "type": ident["Type"]}


def _bytes_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _bytes_av(v) for k, v in item.items()}


def _bytes_av(av: dict[str, Any]) -> dict[str, Any]:
    ((tag, v),) = av.items()
    if tag == "B":
        return {"B": base64.b64decode(v)}
    if tag == "BS":
        return {"BS": [base64.b64decode(x) for x in v]}
    if tag == "M":
        return {"M": _bytes_item(v)}
    if tag == "L":
        return {"L": [_bytes_av(x) for x in v]}
    return av


def dump(records: Iterable[Mapping[str, Any]], shape: Shape, *, arn: str = DEFAULT_ARN) -> bytes:
    """A fixture file's bytes: a Lambda event or a CLI page as one document, else JSON Lines."""
    rendered = [render(r, shape, arn=arn) for r in records]
    if shape == "lambda":
        return orjson.dumps({"Records": rendered}, option=orjson.OPT_INDENT_2) + b"\n"
    if shape == "cli":
        return orjson.dumps({"Records": rendered, "NextShardIterator": None}, option=orjson.OPT_INDENT_2) + b"\n"
    return b"".join(to_json(r) + b"\n" for r in rendered)
