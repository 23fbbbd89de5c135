"""``bench e2e`` runs for real: a `worker kcl` child over real pipes, every sink, the latency stub.

Tiny runs (2,000 records, 1 ms service times); no speed is asserted. What the
stub received is checked against expectations computed from the canonical
workload records alone (no worker code): every group's count and revenue, the
number of archived lines, the documents per bulk flush.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from bench.e2e import Latencies, Result, main, run_workload
from bench.workload import canonical_records, generate

RECORDS = 2000
BATCH = 1000  # flushes fall on batch boundaries: max_batch_records is 1,000 too
LATENCY = Latencies(dynamodb=1.0, mget=1.0, bulk=1.0, s3=1.0)


def expected_groups(fields: list[str], records: int) -> dict[tuple[str, ...], tuple[int, Decimal]]:
    """(count, revenue) per group, replaying the canonical records: old image -1, new image +1."""
    totals: dict[tuple[str, ...], tuple[int, Decimal]] = {}
    for rec in canonical_records(records):
        for image, sign in (("OldImage", -1), ("NewImage", 1)):
            item = rec["dynamodb"].get(image)
            if not item:
                continue
            group = tuple(next(iter(item[f].values())) for f in fields)
            count, revenue = totals.get(group, (0, Decimal(0)))
            totals[group] = (count + sign, revenue + sign * Decimal(item["total"]["N"]))
    return {g: v for g, v in totals.items() if v[0] != 0}


def stored_groups(result: Result, fields: list[str]) -> dict[tuple[str, ...], tuple[int, Decimal]]:
    out = {}
    for row in result.rows:
        group = row["group"]["M"]
        key = tuple(next(iter(group[f].values())) for f in fields)
        count = int(row["count"]["N"])
        assert int(row["orders"]["N"]) == count
        if count:
            out[key] = (count, Decimal(row["revenue"]["N"]))
    return out


def documents_per_batch(records: int) -> int:
    """Bulk actions: one per item changed in each batch (the newest change of each)."""
    keys = [(r["dynamodb"]["Keys"]["pk"]["S"]) for r in canonical_records(records)]
    return sum(len(set(keys[i : i + BATCH])) for i in range(0, len(keys), BATCH))


def check_ran(result: Result, records: int, calls: dict[str, int]) -> None:
    assert result.exit_code == 0, result.stderr
    assert result.records == records and result.batches == records // BATCH  # every batch acknowledged
    assert result.checkpoints and result.checkpoints[-1] == result.last_sequence  # the final checkpoint
    assert result.last_sequence == str(generate(records).multilang[-1]["sequenceNumber"])
    got = result.stub["calls"]
    assert not [op for op in got if op.startswith("unexpected")], got
    for op, n in calls.items():
        assert got.get(op) == n, (op, got)
    items = result.stub["items"]
    assert items["PutObject"] == records  # every record archived, in one object
    assert items["bulk"] == items["mget"] == documents_per_batch(records)
    assert items.get("UpdateItem", 0) == got.get("UpdateItem", 0)  # one row per UpdateItem
    assert items.get("UpdateItem", 0) + items.get("TransactWriteItems", 0) >= len(result.rows)
    assert result.cpu_seconds > 0 and result.seconds > 0


def test_low_cardinality_run_writes_every_group_and_checkpoints_the_last_record() -> None:
    result = run_workload("low", generate(RECORDS), latencies=LATENCY, batch=BATCH)
    # One DescribeTable and one HEAD of the index at start; one mget + bulk per batch; one PUT at shutdown.
    calls = {"DescribeTable": 1, "HEAD index": 1, "mget": 2, "bulk": 2, "PutObject": 1, "BatchGetItem": 1}
    check_ran(result, RECORDS, calls)
    assert stored_groups(result, ["status"]) == expected_groups(["status"], RECORDS)


def test_high_cardinality_run_opens_a_group_per_record() -> None:
    records = BATCH  # one batch: over 1,000 rows, written in transactions of up to 100 rows
    result = run_workload("high", generate(records), latencies=LATENCY, batch=BATCH)
    check_ran(result, records, {"DescribeTable": 1, "HEAD index": 1, "mget": 1, "bulk": 1, "PutObject": 1})
    rows = result.stub["items"]["TransactWriteItems"]
    assert "UpdateItem" not in result.stub["calls"] and result.stub["calls"]["TransactWriteItems"] == -(-rows // 100)
    assert stored_groups(result, ["pk", "version"]) == expected_groups(["pk", "version"], records)
    assert len(result.rows) > records // 2  # groups of high cardinality: about one per record


def test_the_benchmark_prints_its_table_and_targets(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--records", "1000", "--workloads", "low", "--dynamodb-ms", "0", "--mget-ms", "0", "--bulk-ms", "0"])
    out = capsys.readouterr().out
    assert "latency-only stub" in out and "saturated shard (baseline)" in out
    assert "target: e2e low: records/s per shard process >= 3000: " in out
