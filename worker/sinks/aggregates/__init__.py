"""Aggregates sink: counts and sums per group in DynamoDB tables, with an exactly-once effect.

Cadence and freshness: the pipeline flushes this sink every ``[pipeline]
max_batch_records`` records or when its oldest unflushed record is
``flush_interval`` seconds old, so a change reaches its rows at worst
``flush_interval`` plus one flush after it arrived. A flush may happen long
before the checkpoint passes its records (the checkpoint waits for the slowest
sink): after a crash those records come again and the per-shard marks on each
row make the second application a no-op, whatever the batch boundaries.

Configuration (one sink serves every ``[[aggregates]]`` entry)::

    [[aggregates]]
    name = "orders_by_status"          # the rows' partition key
    table = "OrderStats"               # target table (several aggregates may share one)
    group_by = ["status", "ship.city"] # attribute paths, nested allowed
    where = { channel = "web", coupon = { exists = true } }   # optional; also { in = [...] }
    metrics = { orders = "count", revenue = "sum(total)" }
    missing_group = "skip"             # or "null": items lacking a group attribute

What an item contributes (filter, group, missing groups, non-numeric values,
exact decimals) is defined in :mod:`worker.sinks.aggregates.spec`.

Target table layout
-------------------
Key: ``pk`` (S, HASH) = the aggregate's name; ``sk`` (S, RANGE) = the group as a
JSON array of its values in ``group_by`` order (``["paid","Paris"]``; numbers
canonical, no trailing zeros: ``[12.5]``; a missing group under ``"null"`` is
``[null]``). Attributes:

==============  ====  =============================================================
``group``       M     path -> value (``{"status": "paid", "ship.city": "Paris"}``)
``count``       N     items currently in the group
*metric name*   N     one per metric: a count metric equals ``count``; a sum is exact
``hwm``         M     shard id -> ``"<40-digit sequence>@<epoch s>"``: bookkeeping
``updated_at``  S     ISO-8601 UTC time of the last write
==============  ====  =============================================================

Query one aggregate with ``pk = :name``; averages are ``sum / count``. A group
that empties keeps its row with ``count`` 0 and every sum 0 (its marks must
outlive it, see below); ``report()`` and readers should skip such rows.
Provisioning creates tables as ``PAY_PER_REQUEST``; production tables must have
that key schema (checked at start). Metrics added to an existing aggregate only
see changes from then on: rebuild (a fresh table, replay) to backfill.

Exactly-once effect: per-row, per-shard high-water marks
--------------------------------------------------------
Each change gives a delta per touched row: minus the old image's contribution,
plus the new image's (INSERT: +new; REMOVE and TTL expiry: -old; MODIFY: both;
a no-op nothing; a change leaving a row's contribution equal gives no delta).
Deltas are buffered per (aggregate, group) **and per record** (shard, sequence).
At ``flush()`` each touched row gets one ``UpdateItem`` that ``ADD``\\s the sum
of the deltas of the records *above the row's mark* for their shard, sets
``hwm[shard]`` to the highest such sequence, and is conditional on
``attribute_not_exists(hwm[shard]) OR hwm[shard] < first``, ``first`` being the
lowest sequence in the write (marks are 40-digit zero-padded text, so string
order is sequence order; no 64-bit overflow). A new row is created under
``attribute_not_exists(pk)``.

Why this is exact. Invariant: *for every row and shard, the records of that
shard applied to the row are exactly those touching it with a sequence at or
below ``hwm[shard]``.* A write keeps it: it applies every buffered record of
the shard above the mark the sink knows, and the buffer holds every record of
the shard between the worker's checkpoint and the write (a shard is processed
in order from a checkpoint, and the checkpoint only moves after a successful
flush, so records at or below it were already applied by someone, hence lie
at or below the mark). If the real mark moved since the sink read it (another
worker, a crash-and-restart) the write is still exact when the condition
holds (the other writer applied only records below ``first``, none of ours);
when it fails the sink re-reads the row and recomputes the suffix above the
new mark, which is empty when everything was applied: the failure then means
"already applied" and is success. Consequences:

* redelivery with other batch boundaries: records at or below the mark are
  skipped, per row, so a row that applied a prefix of a flush gets the rest;
* a crash anywhere (between two row writes, between the writes and the
  checkpoint): rows are independent, each is applied exactly once by whichever
  attempt gets there first, and nothing is acknowledged before ``flush()``
  returned (the pipeline's contract). Atomicity across rows is never needed;
* two workers on one shard: their conditional writes serialise per row; the
  loser re-reads and applies only what is left (usually nothing).

Deltas commute, so shards may interleave in any order (a child shard before its
parent) and the totals still end at the recomputation from the final items.

Batched writes: transactions as a carrier. A flush round with at least
``transaction_rows`` rows to write (``[aggregate_writes]``, default 100: a
flood of new groups, not a few hot ones) sends them in ``TransactWriteItems``
of up to 100 rows, ``concurrency`` at a time, instead of one ``UpdateItem``
each. Every row's ``Update`` action is exactly its ``UpdateItem``, condition
included, and a transaction commits all its actions or none: each row is
therefore applied as its single write would have been, or not at all, and the
argument above holds unchanged. A cancelled transaction reports a reason per
row (:class:`~worker.sinks.aggregates.store.Outcome`): a failed condition (or a
row held by another write) is re-read and planned again; the others were not
tried and go again as planned. A lost answer after a commit looks like any
lost write: the retry's conditions fail, the rows are re-read, found applied.
Transactions return no item, so the sink derives each written row's state
(:meth:`~worker.sinks.aggregates.store.RowState.after`): exact for its own
marks (the conditions only ever use those), and re-read once it is
``reread_seconds`` (1 h) past its last read, so marks other writers added are
still seen and pruned. The price: 2 WCU per KB of row instead of 1; the gain
(``bench e2e``, groups of high cardinality): about a tenth of the client CPU
per row and a hundredth of the calls. A row write is at most a few KB (sort
key ≤ 1 KB, its group values, one mark per live shard), so 100 stay under
the 4 MB limit of a transaction. ``transaction_rows = 0`` never uses them.

Cost per record. One row write per touched row per flush, whatever the
number of records: a record touches at most two rows per aggregate (its old and
new group), and coalescing makes hot groups cost one write per flush (see
``bench/aggregates.py``). A write consumes ``ceil(item size / 1 KB)`` WCU (twice
that in a transaction); a row is about 150 B plus ~90 B per mark. Reads are only
needed for rows the sink has not seen (one strongly consistent BatchGetItem per
100 rows, then cached from each ``UpdateItem``'s ``ALL_NEW`` response or derived
after a transaction), after a failed condition (which costs 1 WCU), and for rows
whose state is older than ``reread_seconds``.

Bounded bookkeeping. DynamoDB Streams keeps records 24 h and rolls shards every
few hours, so marks of old shards accumulate. Every write to a row also
``REMOVE``\\s marks written more than ``keep_seconds`` ago (default 30 h: 24 h
retention + 6 h margin): all records such a mark covers were created before
that write, hence have left the stream and can never be redelivered. The
removal is conditional on the mark being still as read (a cached mark may have
been rewritten meanwhile by a shard that lives longer than usual). A row
therefore holds one mark per shard that wrote it within the last 30 h (about
8 generations per concurrently open shard), plus the pseudo-shard below.
Assumption (as KCL's leases): no write is delayed by more than the margin
after its records left the stream (a process frozen for 6 h while holding a
stale batch). Replays of archives older than the retention must go to fresh
tables: their shards' marks may already be pruned.

Records without a shard id (fixture files) use the pseudo-shard
:data:`LOCAL_SHARD` with their own sequence numbers: feed them in stream order.
Its mark is never pruned (one entry per row at most). A replayed dead letter
(:attr:`~worker.diff.Change.replayed`: only the sinks that parked it see it)
is applied under a pseudo-shard of its own, ``replay:<shard>/<sequence>``: its
real shard's mark has passed it (the records after it were applied), and its
own mark makes a second replay a no-op. Those marks are pruned like a shard's
(after ``keep_seconds``): replaying the same dead letter again after that
would count it twice.

Failures: throttling, 5xx and connection errors raise ``RetryableError`` (the
pipeline retries ``flush()`` with backoff and jitter; rows written before the
error are done and leave the buffer, the rest stay); a missing table, a
validation error or a total beyond 38 significant digits stops the worker. A
non-numeric value under a summed attribute adds 0 (the documented rule) and the
record is parked from :meth:`AggregatesSink.add` with the field at fault (so is
one whose group is too long for a sort key: it counts nowhere). Known gap of
the emulator: moto adds numbers with 28 significant digits, DynamoDB with 38.

Modules: the sink (:mod:`.sink`), its definitions (:mod:`.spec`), its DynamoDB
rows (:mod:`.store`). Registry entry (see :mod:`worker.sinks.registry`):
enabled by ``[[aggregates]]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.sinks.aggregates.sink import SINK_NAME as NAME
from worker.sinks.aggregates.sink import AggregatesSink, create

if TYPE_CHECKING:
    from worker.config import Config

__all__ = ["EMULATORS", "NAME", "REPLAY_DEFAULT", "AggregatesSink", "create", "enabled", "render"]

REPLAY_DEFAULT = True
EMULATORS = frozenset({"aws"})


def enabled(cfg: Config) -> bool:
    return bool(cfg.aggregates)


def render(report: Any) -> list[str]:
    """Per aggregate its groups, one line each with the metrics."""
    lines: list[str] = []
    for agg, rows in report.items():
        lines.append(f"    {agg}: {len(rows)} groups")
        for row in rows:
            group = ", ".join(f"{k}={v}" for k, v in row.get("group", {}).items())
            metrics = "  ".join(f"{k}={v}" for k, v in row.get("metrics", {}).items())
            lines.append(f"      {group or '(all)':<28} {metrics}")
    return lines
