"""Keeping up: sustained records/s of one real ``worker kcl`` shard process with every sink.

The production shard process (``python -m worker kcl``) runs with aggregates,
search and the archive configured, at the production cadence (the defaults of
``[pipeline]`` and ``[archive]``), against :mod:`bench.latency_stub`: a
**latency-only stub** (not an emulator) in its own process that answers every
call with a minimal valid response after a fixed service time (DynamoDB 5 ms,
OpenSearch ``_mget`` and ``_bulk`` 20 ms each, S3 PUT 30 ms by default).

This process plays the KCL daemon (:mod:`bench.multilang`) over real pipes
with the multilang protocol: ``initialize``, then ``processRecords`` messages of ``--batch``
records (KCL's ``maxRecords`` default, 1,000), each sent as soon as the child
acknowledged the previous one with its ``status`` (the daemon does the same:
one batch in flight per shard); every ``checkpoint`` request is answered as
KCL answers it; then ``shutdownRequested`` (the child flushes everything and
checkpoints the last record) and end of input.

Measured per workload: records/s while feeding (first ``processRecords`` sent
to the last acknowledged), the child's CPU per record (``/proc/<pid>/stat``:
the child alone, every thread), and the calls per 1,000 records each sink made
(counted at the stub). Workloads: ``low`` groups by ``status`` (6 groups);
``high`` groups by (``pk``, ``version``), which is unique per record: every
record opens a new group (a MODIFY also closes its item's previous one). The
named baseline is a saturated shard: 1,000 records/s, the documented write
limit of one DynamoDB partition.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.multilang import Daemon, child_env, cpu_seconds, decoders, messages, rss_mib, start_profiler
from bench.workload import SHARD_ID, Workload, generate
from worker.config import AggregateWritesSection

TARGET_RECORDS_PER_SECOND = 3000.0
SATURATED_SHARD = 1000.0  # records/s: one DynamoDB partition's write limit (1,000 write units/s)
# Row writes (UpdateItems or transactions) the aggregates sink keeps in flight: `worker kcl`'s default
AGGREGATES_CONCURRENCY: int = AggregateWritesSection().concurrency

# workload name -> (group_by, description)
WORKLOADS: dict[str, tuple[list[str], str]] = {
    "low": (["status"], "groups of low cardinality: group by status (6 groups)"),
    "high": (["pk", "version"], "groups of high cardinality: group by (pk, version), a new group per record"),
}

# (column, stub operation): the calls each sink makes
CALLS = [
    ("DDB UpdateItem", "UpdateItem"),
    ("DDB TransactWrite", "TransactWriteItems"),
    ("DDB BatchGet", "BatchGetItem"),
    ("OS bulk", "bulk"),
    ("OS mget", "mget"),
    ("S3 PUT", "PutObject"),
]


@dataclass(frozen=True)
class Latencies:
    """Service times of the stub, in milliseconds."""

    dynamodb: float = 5.0
    mget: float = 20.0
    bulk: float = 20.0
    s3: float = 30.0

    def args(self) -> list[str]:
        return [
            f"--dynamodb-ms={self.dynamodb}",
            f"--mget-ms={self.mget}",
            f"--bulk-ms={self.bulk}",
            f"--s3-ms={self.s3}",
        ]


@dataclass
class Result:
    """One workload's run."""

    workload: str
    records: int = 0  # acknowledged by the child
    batches: int = 0
    seconds: float = 0.0  # first processRecords sent -> last acknowledged
    cpu_seconds: float = 0.0  # the child's CPU over the same span
    stub_cpu_seconds: float = 0.0  # the stub's CPU over the same span (its own process, the other core)
    shutdown_seconds: float = 0.0  # shutdownRequested -> its status (the final flush)
    rss_mib: float = 0.0  # the child's resident memory after the last batch
    checkpoints: list[str] = field(default_factory=list)  # sequence numbers the child checkpointed, in order
    last_sequence: str = ""  # of the last record sent
    exit_code: int | None = None
    stub: dict[str, Any] = field(default_factory=dict)  # the stub's counts
    rows: list[dict[str, Any]] = field(default_factory=list)  # the stub's DynamoDB rows (after the run)
    stderr: str = ""

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_seconds / self.records if self.records else 0.0

    def per_thousand(self, op: str) -> float:
        return 1000 * self.stub.get("calls", {}).get(op, 0) / self.records if self.records else 0.0

    @property
    def rows_per_thousand(self) -> float:
        """Aggregate rows written per 1,000 records (by UpdateItem or inside transactions)."""
        items = self.stub.get("items", {})
        rows = items.get("UpdateItem", 0) + items.get("TransactWriteItems", 0)
        return 1000 * rows / self.records if self.records else 0.0


# -- processes ---------------------------------------------------------------------------------


@contextmanager
def latency_stub(latencies: Latencies) -> Iterator[tuple[dict[str, str], subprocess.Popen[bytes]]]:
    """The stub in its own process: its base URLs (dynamodb, search, s3)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.latency_stub", *latencies.args()],
        stdout=subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the latency stub did not start")
        yield json.loads(line), proc
    finally:
        proc.kill()
        proc.wait()


def stub_get(urls: dict[str, str], what: str) -> Any:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{urls['dynamodb']}/__stub__/{what}", timeout=30) as resp:
        return json.loads(resp.read())


def write_config(directory: Path, urls: dict[str, str], group_by: list[str]) -> Path:
    """Every sink on the stub, production cadence (``[pipeline]`` and ``[archive]`` defaults)."""
    path = directory / "worker.toml"
    path.write_text(
        f"""
[worker]
table = "Orders"
region = "us-east-1"
log_format = "json"
log_level = "warning"
data_dir = "{directory / "data"}"

[aws]
dynamodb_endpoint_url = "{urls["dynamodb"]}"
s3_endpoint_url = "{urls["s3"]}"

[deadletter]
url = "{directory / "dead"}"

[[aggregates]]
name = "orders_by_group"
table = "OrderStats"
group_by = {json.dumps(group_by)}
metrics = {{ orders = "count", revenue = "sum(total)" }}

[search]
url = "{urls["search"]}"
index = "orders"

[archive]
bucket = "orders-archive"

[kcl]
metrics_dir = "{directory / "metrics"}"
"""
    )
    return path


def run_workload(
    name: str,
    work: Workload,
    *,
    latencies: Latencies,
    batch: int = 1000,
    max_seconds: float = 600.0,
    directory: Path | None = None,
    profile: Path | None = None,
    profile_gil: bool = False,
) -> Result:
    """One ``worker kcl`` child through the whole workload (or ``max_seconds`` of it) on a fresh stub."""
    group_by, _ = WORKLOADS[name]
    lines = messages(work, batch)  # encoded before the clock starts: the daemon's work, not the child's
    result = Result(name)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, latency_stub(latencies) as (urls, stub):
        base = directory or Path(tmp)
        config = write_config(base, urls, group_by)
        err_path = base / "child.stderr"
        with err_path.open("wb") as err:
            daemon = Daemon(config, err)
            spy: subprocess.Popen[bytes] | None = None
            try:
                start = {"action": "initialize", "shardId": SHARD_ID, "sequenceNumber": "TRIM_HORIZON"}
                daemon.call({**start, "subSequenceNumber": 0})
                pid = daemon.proc.pid
                spy = start_profiler(pid, profile / f"{name}.txt", gil=profile_gil) if profile else None
                cpu0, stub0, t0 = cpu_seconds(pid), cpu_seconds(stub.pid), time.perf_counter()
                for line, count, last in lines:
                    daemon.send(line)
                    daemon.until_status("processRecords")
                    result.records += count
                    result.batches += 1
                    result.last_sequence = last
                    if time.perf_counter() - t0 >= max_seconds:
                        break
                result.seconds = time.perf_counter() - t0
                result.cpu_seconds = cpu_seconds(pid) - cpu0
                result.stub_cpu_seconds = cpu_seconds(stub.pid) - stub0
                result.rss_mib = rss_mib(pid)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its samples and leaves
                    spy.wait()
                t1 = time.perf_counter()
                daemon.call({"action": "shutdownRequested"})
                result.shutdown_seconds = time.perf_counter() - t1
                daemon.call({"action": "leaseLost"})
                result.exit_code = daemon.close()
            except RuntimeError as exc:
                err.flush()
                raise RuntimeError(f"{name}: {exc}; the child's stderr:\n{err_path.read_text()[-3000:]}") from exc
            finally:
                for proc in (daemon.proc, spy):
                    if proc is not None and proc.poll() is None:
                        proc.kill()
                        proc.wait()
        result.checkpoints = daemon.checkpoints
        result.stderr = err_path.read_text(errors="replace")
        result.stub = stub_get(urls, "counts")
        result.rows = stub_get(urls, "rows")
    return result


# -- report ------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    head = ["workload", "records", "records/s", "x saturated", "CPU us/rec", "RSS MiB"]
    head += [column for column, _ in CALLS] + ["DDB rows"]
    rows = [
        [
            r.workload,
            f"{r.records:,}",
            f"{r.per_second:,.0f}",
            f"{r.per_second / SATURATED_SHARD:.2f}",
            f"{r.cpu_us:,.0f}",
            f"{r.rss_mib:.0f}",
            *(f"{r.per_thousand(op):,.1f}" for _, op in CALLS),
            f"{r.rows_per_thousand:,.1f}",
        ]
        for r in results
    ]
    rows.insert(
        0, ["saturated shard (baseline)", "", f"{SATURATED_SHARD:,.0f}", "1.00", "", ""] + [""] * (len(CALLS) + 1)
    )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt = [f"{h:<{widths[0]}}" if i == 0 else f"{h:>{widths[i]}}" for i, h in enumerate(head)]
    lines = ["  ".join(fmt), "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
    return "\n".join(lines)


def verdict(r: Result) -> str:
    ok = r.per_second >= TARGET_RECORDS_PER_SECOND
    what = f"e2e {r.workload}: records/s per shard process >= {TARGET_RECORDS_PER_SECOND:.0f}"
    return f"target: {what}: {r.per_second:,.0f}, {'met' if ok else 'NOT met'}"


def ceilings(r: Result, lat: Latencies) -> tuple[float, float]:
    """Records/s if only the stub's service times counted, and if only the child's CPU counted.

    Service time per batch: the sinks flush side by side, so a batch waits for
    the slowest of them: the aggregates' BatchGetItems then row writes
    (UpdateItems or transactions), each in rounds of the sink's concurrency;
    search's ``_mget`` then ``_bulk``; the archive's PUTs. The CPU bound is one
    core (one interpreter: the GIL serialises the sinks' threads).
    """
    calls = r.stub.get("calls", {})
    n = max(r.batches, 1)
    writes = (calls.get("UpdateItem", 0) + calls.get("TransactWriteItems", 0)) / n
    reads = calls.get("BatchGetItem", 0) / n
    aggregates = (math.ceil(reads / AGGREGATES_CONCURRENCY) + math.ceil(writes / AGGREGATES_CONCURRENCY)) * lat.dynamodb
    search = calls.get("mget", 0) / n * lat.mget + calls.get("bulk", 0) / n * lat.bulk
    archive = calls.get("PutObject", 0) / n * lat.s3
    wait_ms = max(aggregates, search, archive)
    per_batch = r.records / n
    io = per_batch / (wait_ms / 1000) if wait_ms else float("inf")
    cpu = 1e6 / r.cpu_us if r.cpu_us else float("inf")
    return io, cpu


def details(r: Result) -> str:
    calls = r.stub.get("calls", {})
    items = r.stub.get("items", {})
    done = r.checkpoints[-1] == r.last_sequence if r.checkpoints else False
    return (
        f"{r.workload}: {r.batches} batches in {r.seconds:.1f} s, final flush {r.shutdown_seconds * 1000:.0f} ms,"
        f" {len(r.checkpoints)} checkpoints (last = last record: {'yes' if done else 'NO'}), exit {r.exit_code};"
        f" bulk actions {items.get('bulk', 0):,}, archived lines {items.get('PutObject', 0):,};"
        f" other calls: {', '.join(f'{k} {v}' for k, v in sorted(calls.items()) if k not in dict(CALLS).values())}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=30_000, help="records per workload (default 30,000)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop feeding a workload after this long")
    p.add_argument("--batch", type=int, default=1000, help="records per processRecords (KCL's maxRecords)")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["low", "high"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the child into DIR/<workload>.txt")
    p.add_argument("--profile-gil", action="store_true", help="with --profile: sample the GIL holder only")
    p.add_argument("--dynamodb-ms", type=float, default=5.0, help="stub service time per DynamoDB call")
    p.add_argument("--mget-ms", type=float, default=20.0, help="stub service time per OpenSearch _mget")
    p.add_argument("--bulk-ms", type=float, default=20.0, help="stub service time per OpenSearch _bulk")
    p.add_argument("--s3-ms", type=float, default=30.0, help="stub service time per S3 PUT")
    args = p.parse_args(argv)
    lat = Latencies(args.dynamodb_ms, args.mget_ms, args.bulk_ms, args.s3_ms)
    work = generate(args.records, args.seed)
    print(
        f"workload: {len(work):,} records (bench/workload.py, seed {args.seed}), batches of {args.batch},"
        f" one `worker kcl` child with aggregates + search + archive (production cadence)"
    )
    print(
        f"endpoints: latency-only stub (bench/latency_stub.py, its own process): DynamoDB {lat.dynamodb:g} ms,"
        f" OpenSearch _mget {lat.mget:g} ms and _bulk {lat.bulk:g} ms, S3 PUT {lat.s3:g} ms per call"
    )
    for name in args.workloads:
        print(f"  {name}: {WORKLOADS[name][1]}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} at start")
    print(f"decoders: {decoders()}")
    results = []
    for name in args.workloads:
        r = run_workload(
            name,
            work,
            latencies=lat,
            batch=args.batch,
            max_seconds=args.max_seconds,
            profile=args.profile,
            profile_gil=args.profile_gil,
        )
        if r.exit_code != 0:
            print(f"{name}: the child exited {r.exit_code}; its stderr:\n{r.stderr[-3000:]}", file=sys.stderr)
        results.append(r)
    print()
    print("calls per 1,000 records (counted at the stub; DDB rows: aggregate rows written, alone or in")
    print("transactions); CPU of the child process only (every thread)")
    print(table(results))
    print()
    for r in results:
        print(details(r))
    print()
    print("ceilings (records/s) from this run's counts: service times alone (sinks flushed side by side,")
    print(f"calls {AGGREGATES_CONCURRENCY} at a time per sink) | the child's CPU alone (one core) | child CPU use")
    for r in results:
        io, cpu = ceilings(r, lat)
        use = r.cpu_seconds / r.seconds if r.seconds else 0.0
        stub = r.stub_cpu_seconds / r.seconds if r.seconds else 0.0
        print(f"  {r.workload}: {io:,.0f} | {cpu:,.0f} | {100 * use:.0f}% of a core (the stub: {100 * stub:.0f}%)")
    print()
    print(f"baseline: saturated shard: {SATURATED_SHARD:,.0f} records/s (one DynamoDB partition's write limit)")
    for r in results:
        print(f"{r.workload}: {r.per_second:,.0f} records/s = {r.per_second / SATURATED_SHARD:.2f}x a saturated shard")
    for r in results:
        print(verdict(r))
