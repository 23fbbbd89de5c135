"""DynamoDB I/O of the aggregates sink: the row layout, reads, conditional writes, tables.

The layout and the reasoning behind the conditions are documented in
:mod:`worker.sinks.aggregates`; this module turns one planned row write into
one ``UpdateItem`` (or one action of a ``TransactWriteItems``) and maps every
failure to one action (retry, stop).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from worker.attributes import decode_item, decode_value, encode_value
from worker.aws import classify_dynamodb, error_code
from worker.canonical import number_text, seq_text
from worker.errors import FatalError, RetryableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from worker.sinks.aggregates.spec import Aggregate

PK, SK, GROUP, COUNT, HWM, UPDATED = "pk", "sk", "group", "count", "hwm", "updated_at"
BATCH_GET_MAX = 100
TRANSACTION_MAX_ROWS = 100  # DynamoDB's limit of actions per TransactWriteItems

CONDITION_FAILED = "ConditionalCheckFailedException"
CANCELLED = "TransactionCanceledException"
# Cancellation reasons (one per action of a cancelled transaction) and what each means for its row.
_REASON_NOT_TRIED = "None"  # cancelled because of another row: write it again as planned
_REASON_CONFLICT = frozenset({"ConditionalCheckFailed", "TransactionConflict"})  # re-read, then plan again
_REASON_THROTTLED = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})

RowId = tuple[str, str, str]  # (table, pk, sk)


def hwm_entry(sequence: int, at: float) -> str:
    """``<40-digit sequence>@<epoch seconds>``: compares like the sequence against a bare seq_text one.

    For an equal sequence the entry is longer than the bare text, hence greater:
    ``entry < seq_text(first)`` holds exactly when the applied sequence is below ``first``.
    """
    return f"{seq_text(sequence)}@{int(at)}"


def parse_entry(entry: str) -> tuple[int, float]:
    seq, _, at = entry.partition("@")
    return int(seq), float(at or 0)


@dataclass(frozen=True)
class RowState:
    """What the sink knows of one row: whether it exists and its high-water marks.

    ``read_at`` is when this knowledge last came from DynamoDB itself (a read,
    or an ``UpdateItem``'s ``ALL_NEW``); a state derived locally after a
    transaction (:meth:`after`) keeps it, so the sink can re-read rows it has
    only derived for a long time (marks other writers added meanwhile are then
    seen, and pruned in time).
    """

    exists: bool
    hwm: Mapping[str, str] = field(default_factory=dict)  # shard -> hwm_entry
    totals: Mapping[str, Decimal] = field(default_factory=dict)  # count and metric attributes, as read
    read_at: float = 0.0

    def applied(self, shard: str) -> int | None:
        """The last sequence of ``shard`` applied to this row (``None``: none known)."""
        entry = self.hwm.get(shard)
        return parse_entry(entry)[0] if entry is not None else None

    def stale(self, now: float, keep_seconds: float, keep: Iterable[str]) -> list[tuple[str, str]]:
        """Marks (shard, entry) last written more than ``keep_seconds`` ago: prunable."""
        kept = set(keep)
        return sorted((s, e) for s, e in self.hwm.items() if s not in kept and parse_entry(e)[1] < now - keep_seconds)

    def after(self, row: RowWrite, now: float) -> RowState:
        """The row as ``row`` (planned from this state) left it, as far as this writer knows.

        Exact for the marks ``row`` wrote and pruned; other shards' marks and the
        totals are as read plus this write's deltas (another writer may have added
        to them meanwhile: the conditions never rely on those, see ``read_at``).
        """
        hwm = {} if row.create else dict(self.hwm)
        for shard, _ in row.prune:
            hwm.pop(shard, None)
        for shard, (_, last) in row.marks.items():
            hwm[shard] = hwm_entry(last, now)
        totals = {} if row.create else dict(self.totals)
        for attr, delta in row.deltas:
            totals[attr] = totals.get(attr, Decimal(0)) + delta
        return RowState(True, hwm, totals, self.read_at)


ABSENT = RowState(False)


def state_of(attributes: Mapping[str, Any] | None) -> RowState:
    """A row's state from an item as DynamoDB returned it (``None``: no such row)."""
    if attributes is None:
        return ABSENT
    raw = attributes.get(HWM)
    hwm = decode_value(raw) if raw is not None else {}
    totals = {k: Decimal(v["N"]) for k, v in attributes.items() if isinstance(v, Mapping) and "N" in v}
    return RowState(True, {str(k): str(v) for k, v in (hwm or {}).items()}, totals)


@dataclass(frozen=True)
class RowWrite:
    """One planned write: add ``deltas`` and raise each shard's mark, if nobody did first.

    ``marks`` maps a shard to ``(first, last)``: the lowest and highest sequence
    of that shard in this write. ``prune`` lists stale marks to drop, as read:
    each is removed only if still unchanged (a mark this sink's cache thought
    old may have been written again meanwhile; then the write is refused and
    the row re-read).
    """

    table: str
    pk: str
    sk: str
    group: Mapping[str, Any]
    deltas: Sequence[tuple[str, Decimal]]  # (attribute, delta), count first
    marks: Mapping[str, tuple[int, int]]
    create: bool  # the row did not exist when read
    prune: Sequence[tuple[str, str]] = ()

    def request(self, now: float, *, returns: bool = True) -> dict[str, Any]:
        """The ``UpdateItem`` arguments (``returns``: with ``ReturnValues=ALL_NEW``; a transaction's
        ``Update`` action takes the same arguments without it)."""
        names: dict[str, str] = {"#hwm": HWM, "#upd": UPDATED}
        values: dict[str, Any] = {":upd": {"S": _iso(int(now))}}
        sets = ["#upd = :upd"]
        adds: list[str] = []
        removes: list[str] = []
        for i, (attr, delta) in enumerate(self.deltas):
            if delta.is_zero() and not self.create:
                continue  # an existing row already has the attribute; a new one gets its 0
            names[f"#a{i}"] = attr
            values[f":a{i}"] = {"N": number_text(delta)}
            adds.append(f"#a{i} :a{i}")
        if self.create:
            names["#pk"] = PK
            names["#grp"] = GROUP
            values[":grp"] = encode_value(dict(self.group))
            values[":hwm"] = {"M": {s: {"S": hwm_entry(last, now)} for s, (_, last) in self.marks.items()}}
            sets += ["#grp = :grp", "#hwm = :hwm"]
            condition = "attribute_not_exists(#pk)"
        else:
            parts = ["attribute_exists(#hwm)"]
            for i, (shard, (first, last)) in enumerate(sorted(self.marks.items())):
                names[f"#s{i}"] = shard
                values[f":s{i}"] = {"S": hwm_entry(last, now)}
                values[f":f{i}"] = {"S": seq_text(first)}
                sets.append(f"#hwm.#s{i} = :s{i}")
                parts.append(f"(attribute_not_exists(#hwm.#s{i}) OR #hwm.#s{i} < :f{i})")
            for i, (shard, entry) in enumerate(self.prune):
                names[f"#x{i}"] = shard
                values[f":x{i}"] = {"S": entry}
                removes.append(f"#hwm.#x{i}")
                parts.append(f"(attribute_not_exists(#hwm.#x{i}) OR #hwm.#x{i} = :x{i})")
            condition = " AND ".join(parts)
        expression = "SET " + ", ".join(sets)
        if adds:
            expression += " ADD " + ", ".join(adds)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        out = {
            "TableName": self.table,
            "Key": {PK: {"S": self.pk}, SK: {"S": self.sk}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if returns:
            out["ReturnValues"] = "ALL_NEW"
        return out

    def where(self) -> str:
        return f"{self.table} {self.pk} {self.sk}"


@functools.lru_cache(maxsize=8)
def _iso(second: int) -> str:
    """``updated_at`` text of a second (the rows of one flush share it)."""
    return datetime.fromtimestamp(second, UTC).isoformat()


# -- calls ----------------------------------------------------------------------------------------


def write(client: DynamoDBClient, row: RowWrite, now: float) -> RowState | None:
    """Apply one row write; its new state, or ``None`` when the condition failed (someone was first)."""
    try:
        resp = client.update_item(**row.request(now))
    except ClientError as exc:
        if error_code(exc) == CONDITION_FAILED:
            return None
        raise classify_dynamodb(exc, f"UpdateItem {row.where()}") from exc
    except BotoCoreError as exc:
        raise classify_dynamodb(exc, f"UpdateItem {row.where()}") from exc
    return state_of(resp.get("Attributes"))


class Outcome(Enum):
    """What became of one row of a transaction."""

    APPLIED = "applied"  # committed: the row's conditional update took effect
    CONFLICT = "conflict"  # its condition failed, or another write held the row: re-read, plan again
    NOT_TRIED = "not tried"  # cancelled because of another row: nothing written, plan again as is


def transact(client: DynamoDBClient, rows: Sequence[RowWrite], now: float) -> list[Outcome]:
    """Apply up to :data:`TRANSACTION_MAX_ROWS` row writes in one ``TransactWriteItems``.

    Each row's ``Update`` carries exactly the condition of its single
    ``UpdateItem`` (:meth:`RowWrite.request`), and a transaction commits all of
    them or none: so every row either took effect as a successful ``UpdateItem``
    would have, or not at all. The outcome of each row, in order. Throttling
    and other transient failures raise :class:`RetryableError` (nothing was
    written); a reason DynamoDB gives as invalid (a total beyond its numbers)
    stops the worker, naming the row.
    """
    what = f"TransactWriteItems ({len(rows)} rows, first {rows[0].where()})"
    try:
        actions: list[Any] = [{"Update": row.request(now, returns=False)} for row in rows]
        client.transact_write_items(TransactItems=actions)
    except ClientError as exc:
        if error_code(exc) != CANCELLED:
            raise classify_dynamodb(exc, what) from exc
        reasons = exc.response.get("CancellationReasons") or []
        if len(reasons) != len(rows):
            raise RetryableError(f"{what}: cancelled with {len(reasons)} reasons for {len(rows)} rows") from exc
        pairs = zip(rows, reasons, strict=True)
        return [_outcome(row, r.get("Code", ""), r.get("Message", ""), exc) for row, r in pairs]
    except BotoCoreError as exc:
        raise classify_dynamodb(exc, what) from exc
    return [Outcome.APPLIED] * len(rows)


def _outcome(row: RowWrite, code: str, message: str, exc: ClientError) -> Outcome:
    if code == _REASON_NOT_TRIED:
        return Outcome.NOT_TRIED
    if code in _REASON_CONFLICT:
        return Outcome.CONFLICT
    if code in _REASON_THROTTLED:
        raise RetryableError(f"TransactWriteItems {row.where()}: {code}") from exc
    if code == "ValidationError":
        raise FatalError(f"TransactWriteItems {row.where()}: {code}: {message}") from exc
    raise RetryableError(f"TransactWriteItems {row.where()}: cancelled: {code or '?'} {message}") from exc


def read_states(client: DynamoDBClient, rows: Sequence[RowId], attempts: int = 4) -> dict[RowId, RowState]:
    """Strongly consistent reads of rows' marks (BatchGetItem, 100 keys a call)."""
    out: dict[RowId, RowState] = {}
    for start in range(0, len(rows), BATCH_GET_MAX):
        chunk = rows[start : start + BATCH_GET_MAX]
        request: dict[str, Any] = {}
        for table, pk, sk in chunk:
            entry = request.setdefault(table, {"Keys": [], "ConsistentRead": True})  # marks and totals
            entry["Keys"].append({PK: {"S": pk}, SK: {"S": sk}})
        for _ in range(attempts):
            try:
                resp = client.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                raise classify_dynamodb(exc, "BatchGetItem") from exc
            for table, items in resp.get("Responses", {}).items():
                for item in items:
                    out[(table, item[PK]["S"], item[SK]["S"])] = state_of(item)
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise RetryableError(f"BatchGetItem: keys still unprocessed after {attempts} attempts")
        for row in chunk:
            out.setdefault(row, ABSENT)
    return out


def query_rows(client: DynamoDBClient, table: str, pk: str) -> list[dict[str, Any]]:
    """Every row of one aggregate, decoded, in sort-key order."""
    rows: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#pk = :pk",
        "ExpressionAttributeNames": {"#pk": PK},
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": True,
    }
    while True:
        try:
            resp = client.query(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise classify_dynamodb(exc, f"Query {table} {pk}") from exc
        rows.extend(decode_item(item, table) for item in resp.get("Items", []))
        last = resp.get("LastEvaluatedKey")
        if not last:
            return rows
        kwargs["ExclusiveStartKey"] = last


def ensure_table(client: DynamoDBClient, table: str, *, create: bool) -> None:
    """Check that ``table`` exists with the layout's keys; create it when ``create`` (local runs)."""
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise classify_dynamodb(exc, f"DescribeTable {table}") from exc
        if not create:
            raise FatalError(f"aggregate table {table!r} does not exist (see worker.sinks.aggregates)") from exc
        _create_table(client, table)
        return
    except BotoCoreError as exc:
        raise classify_dynamodb(exc, f"DescribeTable {table}") from exc
    keys = {k["AttributeName"]: k["KeyType"] for k in desc.get("KeySchema", [])}
    if keys != {PK: "HASH", SK: "RANGE"}:
        raise FatalError(f"aggregate table {table!r} must have keys pk (HASH, S) and sk (RANGE, S), has {keys}")


def _create_table(client: DynamoDBClient, table: str) -> None:
    try:
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": PK, "KeyType": "HASH"}, {"AttributeName": SK, "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": PK, "AttributeType": "S"},
                {"AttributeName": SK, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":  # created meanwhile by someone else
            raise classify_dynamodb(exc, f"CreateTable {table}") from exc
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def report_rows(agg: Aggregate, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report entries of an aggregate's stored rows (decoded items); all-zero rows are empty groups."""
    out = []
    for row in sorted(rows, key=lambda r: str(r[SK])):
        values = row_vector(agg, row)
        if all(v.is_zero() for v in values.values()):
            continue
        group = row.get(GROUP) or {}
        metrics = {m.name: int(values[m.name]) if m.path is None else number_text(values[m.name]) for m in agg.metrics}
        out.append({"group": agg.group_dict([group.get(path) for path in agg.group_by]), "metrics": metrics})
    return out


def row_vector(agg: Aggregate, row: dict[str, Any]) -> dict[str, Decimal]:
    """A stored row's ``count`` and metric attributes (absent: 0)."""
    out = {COUNT: _number(row.get(COUNT))}
    for m in agg.metrics:
        out[m.name] = _number(row.get(m.name))
    return out


def _number(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(0)
