"""Stream checkpoints in the KCL 3 lease table: list them, and rewrite them safely.

The lease table (named after ``[kcl] application_name`` unless the
``tableName`` KCL property says otherwise) has one item per shard: hash key
``leaseKey`` (the shard id), ``leaseOwner``, ``leaseCounter`` (bumped by every
renewal, take and assignment), ``checkpoint`` (a sequence number or
``TRIM_HORIZON``/``LATEST``/``SHARD_END``), ``checkpointSubSequenceNumber`` and
the pending-checkpoint and hand-off attributes (see ``launcher/PROTOCOL.md``).

Reset safety. A lease is *held* when it has an owner whose counter moves: its
worker renews it every ``failoverTimeMillis / 3`` (10 s / 3 by default), so
the counter is read twice, ``wait`` seconds apart. A held lease is refused
unless ``force``. Every rewrite is conditional on the counter last read, so a
worker that renews or takes the lease in between wins and the rewrite fails
(reported, never silently lost). A rewrite also bumps the counter and removes
the owner: a worker still holding it (``force``) fails its next renewal and
checkpoint (both conditional on the counter), drops the lease, and whoever
takes it next starts from the new checkpoint.

KCL resumes *after* the checkpointed sequence number: resetting to ``SEQUENCE``
replays from the record following it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

SENTINELS = {"trim-horizon": "TRIM_HORIZON", "latest": "LATEST"}
SHARD_END = "SHARD_END"
DEFAULT_WAIT_SECONDS = 12.0  # > KCL's default failoverTimeMillis (10 s): a live owner renews within it


@dataclass(frozen=True)
class Lease:
    shard: str
    owner: str | None
    counter: int
    checkpoint: str | None
    sub_sequence: int
    owner_switches: int
    parents: tuple[str, ...]
    checkpoint_owner: str | None  # KCL 3 graceful hand-off in progress
    pending_checkpoint: str | None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lease:
        def s(name: str) -> str | None:
            v = item.get(name)
            return v["S"] if v and "S" in v else None

        def n(name: str) -> int:
            v = item.get(name)
            return int(v["N"]) if v and "N" in v else 0

        parents = item.get("parentShardId", {}).get("SS", [])
        return cls(
            shard=item["leaseKey"]["S"],
            owner=s("leaseOwner"),
            counter=n("leaseCounter"),
            checkpoint=s("checkpoint"),
            sub_sequence=n("checkpointSubSequenceNumber"),
            owner_switches=n("ownerSwitchesSinceCheckpoint"),
            parents=tuple(sorted(parents)),
            checkpoint_owner=s("checkpointOwner"),
            pending_checkpoint=s("pendingCheckpoint"),
        )


@dataclass(frozen=True)
class Lag:
    """How far a checkpoint is behind the stream.

    ``seconds``: age of the oldest record after the checkpoint (0 when there is
    none); ``None`` with ``note`` when it cannot be told (``trimmed`` means the
    checkpoint is older than the stream's 24 h retention: records were lost).
    """

    seconds: float | None
    note: str = ""

    def text(self) -> str:
        if self.seconds is None:
            return self.note or "?"
        return f"{self.seconds:.0f}s" + (f" ({self.note})" if self.note else "")


class LeasesHeld(FatalError):
    """The reset was refused: these leases are held by live workers."""

    def __init__(self, leases: Sequence[Lease]) -> None:
        self.leases = list(leases)
        names = ", ".join(f"{lease.shard} (owner {lease.owner})" for lease in leases)
        super().__init__(
            f"refusing to reset: {len(leases)} lease(s) held by running workers: {names}. "
            "Stop the workers (or wait for their leases to expire), or use --force."
        )


class LeaseChanged(FatalError):
    """A lease changed between reading it and rewriting it; nothing was written to it."""


def lease_table(cfg: Any) -> str:
    return str(cfg.kcl.properties.get("tableName") or cfg.kcl.application_name)


def read_leases(ddb: DynamoDBClient, table: str) -> list[Lease]:
    """Every lease, sorted by shard id (consistent reads)."""
    leases: list[Lease] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    try:
        while True:
            page = ddb.scan(**kwargs)
            leases.extend(Lease.from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    except ddb.exceptions.ResourceNotFoundException:
        raise FatalError(
            f"lease table {table!r} not found (has the worker ever run with this application name?)"
        ) from None
    return sorted(leases, key=lambda lease: lease.shard)


def target_checkpoint(to: str, shards: Sequence[str] | None) -> str:
    """``trim-horizon`` / ``latest`` / a sequence number -> the lease table value."""
    if to.lower() in SENTINELS:
        return SENTINELS[to.lower()]
    if to.isdigit() and 21 <= len(to) <= 40:
        if not shards or len(shards) != 1:
            raise ConfigError("--to", "a sequence number belongs to one shard: give exactly one --shard")
        return to
    raise ConfigError("--to", f"must be trim-horizon, latest or a sequence number (21-40 digits), got {to!r}")


@dataclass(frozen=True)
class ResetResult:
    shard: str
    before: str | None
    after: str
    forced: bool  # the lease was held and --force rewrote it anyway


def reset(
    ddb: DynamoDBClient,
    table: str,
    to: str,
    *,
    shards: Sequence[str] | None = None,
    force: bool = False,
    wait: float = DEFAULT_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ResetResult]:
    """Rewrite the checkpoints of ``shards`` (default: every lease) to ``to``.

    Raises :class:`LeasesHeld` (nothing written) when a selected lease is held
    and not ``force``; :class:`LeaseChanged` when a lease changed between the
    check and the write (that lease and the ones after it are not written;
    with ``force`` the write is retried on a fresh read a few times first).
    """
    value = target_checkpoint(to, shards)
    first = _select(read_leases(ddb, table), shards)
    held: list[Lease] = []
    if any(lease.owner for lease in first):
        sleep(wait)
        current = {lease.shard: lease for lease in _select(read_leases(ddb, table), shards)}
        for lease in first:
            now = current.get(lease.shard)
            if now is not None and now.owner and now.counter != lease.counter:
                held.append(now)
        first = [current.get(lease.shard, lease) for lease in first]
    if held and not force:
        raise LeasesHeld(held)
    held_names = {lease.shard for lease in held}
    results = []
    for lease in first:
        written = _rewrite_forced(ddb, table, lease, value) if force else rewrite(ddb, table, lease, value)
        results.append(ResetResult(lease.shard, written.checkpoint, value, lease.shard in held_names))
    return results


def _rewrite_forced(ddb: DynamoDBClient, table: str, lease: Lease, value: str, attempts: int = 5) -> Lease:
    """Rewrite even if the holder renews in between: re-read and try again (a renewal is not an answer)."""
    for attempt in range(attempts):
        try:
            return rewrite(ddb, table, lease, value)
        except LeaseChanged:
            if attempt + 1 >= attempts:
                raise
            lease = next(x for x in read_leases(ddb, table) if x.shard == lease.shard)
    raise AssertionError("unreachable")


def _select(leases: list[Lease], shards: Sequence[str] | None) -> list[Lease]:
    if not shards:
        return leases
    known = {lease.shard: lease for lease in leases}
    missing = [s for s in shards if s not in known]
    if missing:
        raise ConfigError("--shard", f"no lease for {', '.join(missing)} (known: {', '.join(known) or 'none'})")
    return [known[s] for s in shards]


def rewrite(ddb: DynamoDBClient, table: str, lease: Lease, value: str) -> Lease:
    """Set ``lease``'s checkpoint to ``value`` if its counter is still the one read; release the lease.

    Returns ``lease`` (as it was before the write). Raises :class:`LeaseChanged` when the
    lease changed since it was read.
    """
    try:
        ddb.update_item(
            TableName=table,
            Key={"leaseKey": {"S": lease.shard}},
            UpdateExpression=(
                "SET #cp = :cp, #sub = :zero, #sw = :zero ADD #ctr :one "
                "REMOVE #owner, #cpowner, #pend, #pendsub, #pendstate"
            ),
            ConditionExpression="#ctr = :seen",
            ExpressionAttributeNames={
                "#cp": "checkpoint",
                "#sub": "checkpointSubSequenceNumber",
                "#sw": "ownerSwitchesSinceCheckpoint",
                "#ctr": "leaseCounter",
                "#owner": "leaseOwner",
                "#cpowner": "checkpointOwner",
                "#pend": "pendingCheckpoint",
                "#pendsub": "pendingCheckpointSubSequenceNumber",
                "#pendstate": "pendingCheckpointState",
            },
            ExpressionAttributeValues={
                ":cp": {"S": value},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
                ":seen": {"N": str(lease.counter)},
            },
        )
    except ddb.exceptions.ConditionalCheckFailedException:
        raise LeaseChanged(
            f"lease {lease.shard} changed while resetting (a worker renewed or took it); "
            "nothing more was written: run the reset again"
        ) from None
    return lease


# -- lag ----------------------------------------------------------------------------


def lag(streams: DynamoDBStreamsClient, stream_arn: str, lease: Lease, now: dt.datetime, *, pages: int = 5) -> Lag:
    """The age of the oldest record after ``lease``'s checkpoint (a few GetRecords calls at most)."""
    cp = lease.checkpoint
    if cp == SHARD_END:
        return Lag(0.0, "shard ended")
    if cp == "LATEST" or not cp:
        return Lag(None, "at LATEST" if cp else "no checkpoint")
    kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": lease.shard}
    if cp == "TRIM_HORIZON":
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    elif cp.isdigit():
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=cp)
    else:
        return Lag(None, f"checkpoint {cp}")
    try:
        iterator = streams.get_shard_iterator(**kwargs).get("ShardIterator")
        for _ in range(pages):
            if not iterator:
                return Lag(0.0, "shard closed")
            page = streams.get_records(ShardIterator=iterator, Limit=1)
            records = page.get("Records") or []
            if records:
                created = records[0]["dynamodb"]["ApproximateCreationDateTime"]
                return Lag(max(0.0, (now - _utc(created)).total_seconds()))
            iterator = page.get("NextShardIterator")
        return Lag(0.0)
    except streams.exceptions.TrimmedDataAccessException:
        return Lag(None, "trimmed: checkpoint older than the 24 h retention")
    except streams.exceptions.ResourceNotFoundException:
        return Lag(None, "shard expired")
    except Exception as exc:  # a status listing must not die on one shard
        return Lag(None, f"error: {type(exc).__name__}")


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(float(value), dt.UTC)


def rows(leases: Iterable[Lease], lags: dict[str, Lag]) -> list[dict[str, Any]]:
    """The ``checkpoints show`` listing, one dict per lease."""
    out = []
    for lease in leases:
        lg = lags.get(lease.shard)
        out.append(
            {
                "shard": lease.shard,
                "owner": lease.owner,
                "checkpoint": lease.checkpoint,
                "lease_counter": lease.counter,
                "lag_seconds": lg.seconds if lg else None,
                "lag": lg.text() if lg else "",
                "parents": list(lease.parents),
                "checkpoint_owner": lease.checkpoint_owner,  # set during a KCL 3 graceful hand-off
            }
        )
    return out
