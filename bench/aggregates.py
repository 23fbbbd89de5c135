"""Aggregates sink against moto: DynamoDB writes per 1,000 records and records per second.

Both stacks run in one process, against one moto server (``worker.emulators.start_moto``),
on the same records of the shared workload (:mod:`bench.workload`: orders whose
``status``, ``customer.address.city`` and ``total`` change), with two aggregates:
orders and revenue by status, and by city and status.

* ``AggregatesSink``: the worker's sink (coalesced, conditional, exactly-once);
  one flush per batch (``--batch``, KCL's default is 1,000 records);
* ``NaiveUpdateItemSink`` (the baseline): one unconditional ``UpdateItem ADD``
  per record and touched row, as a Lambda handler typically does it.

Records are decoded and diffed before timing: the figure is the sink's own cost
(its wall time, which against moto is dominated by requests). The last column
replays the last batch (a redelivery after a crash before the checkpoint) and
says whether the totals stayed exact: the baseline counts it twice.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.workload import batches, canonical_records
from worker.attributes import encode_value
from worker.aws import client
from worker.canonical import number_text
from worker.config import AggregateSection, AwsSection, Config
from worker.decode import decode_mapping
from worker.diff import Change, ChangeKind, diff
from worker.emulators import FAKE_CREDENTIALS, start_moto
from worker.errors import RecordError
from worker.sinks.aggregates import AggregatesSink
from worker.sinks.aggregates.spec import Aggregate, compile_aggregate, deltas
from worker.sinks.aggregates.store import COUNT, GROUP, PK, SK, ensure_table

SHARD = "shardId-00000001700000000000-bench0001"
TABLE = "BenchStats"


def sections(prefix: str) -> list[AggregateSection]:
    return [
        AggregateSection(
            name=f"{prefix}_by_status",
            table=TABLE,
            group_by=["status"],
            metrics={"orders": "count", "revenue": "sum(total)"},
        ),
        AggregateSection(
            name=f"{prefix}_by_city_status",
            table=TABLE,
            group_by=["customer.address.city", "status"],
            metrics={"orders": "count", "revenue": "sum(total)"},
        ),
    ]


class CountingClient:
    """A boto3 client that counts calls per operation."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(**kwargs)

        return call


class NaiveUpdateItemSink:
    """The baseline: one unconditional ``UpdateItem`` per record and touched row (at-least-once)."""

    name = "naive"

    def __init__(self, client: Any, aggregates: Sequence[AggregateSection]) -> None:
        self.client = client
        self.aggregates: list[Aggregate] = [compile_aggregate(a) for a in aggregates]
        self.pending: list[Change] = []

    def add(self, change: Change) -> None:
        self.pending.append(change)

    def flush(self) -> Sequence[RecordError]:
        for change in self.pending:
            old = None if change.kind is ChangeKind.INSERT else change.old
            new = change.new if change.kind in (ChangeKind.INSERT, ChangeKind.MODIFY) else None
            for d in deltas(self.aggregates, old, new)[0]:
                agg = self.aggregates[d.number]
                names = {"#grp": GROUP, "#c": COUNT}
                values: dict[str, Any] = {
                    ":grp": {"M": {p: encode_value(v) for p, v in zip(agg.group_by, d.group, strict=True)}},
                    ":c": {"N": number_text(d.vector[0])},
                }
                adds = ["#c :c"]
                for i, m in enumerate(agg.metrics):
                    names[f"#m{i}"] = m.name
                    v = d.vector[0] if m.path is None else d.vector[1 + agg.sums.index(m)]
                    values[f":m{i}"] = {"N": number_text(v)}
                    adds.append(f"#m{i} :m{i}")
                self.client.update_item(
                    TableName=agg.table,
                    Key={PK: {"S": agg.name}, SK: {"S": d.key}},
                    UpdateExpression="SET #grp = if_not_exists(#grp, :grp) ADD " + ", ".join(adds),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
        self.pending.clear()
        return ()

    def close(self) -> None:
        self.pending.clear()


@dataclass
class Result:
    stack: str
    batch: int
    records: int
    seconds: float
    writes: int
    reads: int
    exact_after_redelivery: bool


def run(stack: str, sink: Any, counting: CountingClient, changes: list[Change], batch: int) -> Result:
    counting.calls.clear()
    started = time.perf_counter()
    for part in batches(changes, batch):
        for c in part:
            sink.add(c)
        sink.flush()
    seconds = time.perf_counter() - started
    writes = counting.calls.get("update_item", 0)
    reads = counting.calls.get("batch_get_item", 0)
    before = report(sink, counting)
    for c in batches(changes, batch)[-1]:  # redelivered after a crash before the checkpoint
        sink.add(c)
    sink.flush()
    return Result(stack, batch, len(changes), seconds, writes, reads, report(sink, counting) == before)


def report(sink: Any, counting: CountingClient) -> Any:
    reader = AggregatesSink(counting.real, sink.aggregates)
    return reader.report()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench aggregates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    for k, v in FAKE_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the emulator's; the client needs one
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    changes = [
        diff(decode_mapping(r, where=f"{SHARD}/{r['dynamodb']['SequenceNumber']}", shard_id=SHARD))
        for r in canonical_records(args.records, args.seed)
    ]
    moto = start_moto()
    try:
        real = client(Config(aws=AwsSection(endpoint_url=moto.url)), "dynamodb")
        ensure_table(real, TABLE, create=True)
        results: list[Result] = []
        for batch in args.batch:
            counting = CountingClient(real)
            sink = AggregatesSink(counting, sections(f"worker{batch}"))
            results.append(run("AggregatesSink", sink, counting, changes, batch))
        counting = CountingClient(real)
        naive = NaiveUpdateItemSink(counting, sections("naive"))
        results.append(run("NaiveUpdateItemSink (baseline)", naive, counting, changes, args.batch[0]))
    finally:
        moto.stop()
    print_table(results)


def print_table(results: list[Result]) -> None:
    base = results[-1]
    head = (
        f"{'stack':<32} {'batch':>5} {'records':>7} {'writes':>7} {'writes/1k rec':>13} {'reads':>5} "
        f"{'records/s':>9} {'vs baseline':>11}  exact after redelivery"
    )
    print(head)
    print("-" * len(head))
    base_rate = base.records / base.seconds
    for r in results:
        rate = r.records / r.seconds
        print(
            f"{r.stack:<32} {r.batch:>5} {r.records:>7} {r.writes:>7} {r.writes * 1000 / r.records:>13.1f} "
            f"{r.reads:>5} {rate:>9.0f} {rate / base_rate:>10.1f}x  {'yes' if r.exact_after_redelivery else 'NO'}"
        )
    # The sink's promises, judged on its largest batch: exactly once, and far fewer writes.
    worker = max(results[:-1], key=lambda r: r.batch)
    fewer = base.writes / max(worker.writes, 1)
    print()
    exact = worker.exact_after_redelivery
    print(f"target: {worker.stack} exact after a redelivery: {'yes' if exact else 'no'}, {verdict(exact)}")
    print(
        f"target: {worker.stack} writes >= {TARGET_FEWER_WRITES:g}x fewer than the per-record baseline: "
        f"{fewer:.1f}x, {verdict(fewer >= TARGET_FEWER_WRITES)}"
    )


TARGET_FEWER_WRITES = 10.0


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    main()
