"""Footprint of one shard process: resident memory and start-up/import time of `worker kcl`.

KCL runs one `worker kcl` child per shard lease, so a container holding N
leases pays N times this. The measured process is real: `python -m worker kcl`
with all three sinks configured (aggregates and archive on a moto server,
search on osmem-server, dead letters in a temp dir), driven over its
stdin/stdout with the KCL 3 daemon's messages (`initialize`, then
`processRecords` batches of the bench workload, each checkpoint answered).
Resident memory is read from ``/proc/<pid>/status`` (VmRSS now, VmHWM peak).

Baselines in the same run: a bare ``python -c pass`` and a process that only
imports what the child imports (`worker.sources.kcl`, the three sink modules,
boto3 and opensearch-py clients), so the table separates the interpreter, the
imports, and the work. Import time: wall clock of those processes (best of
``--repeats``), plus the largest cumulative entries of ``python -X importtime``.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.multilang import Daemon
from bench.workload import batches, generate

IMPORTS = (
    "import worker.cli, worker.sources.kcl, worker.app, worker.sinks.aggregates, worker.sinks.search,"
    " worker.sinks.archive, worker.deadletters, amazon_kclpy.kcl, boto3, opensearchpy"
)


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


TARGET_RSS_MIB = 80.0  # a shard process with every sink, after 10,000 records
TARGET_IMPORT_MS = 200.0  # the imports of `worker kcl`


def best_wall(argv: list[str], repeats: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (user + system, from the child's rusage) of ``argv``.

    CPU time is what the process itself spent; wall time also counts waiting for a
    core, which on a shared machine measures the neighbours.
    """
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best_cpu = min(best_cpu, cpu)
    return best, best_cpu


def target(what: str, value: str, met: bool) -> str:
    return f"target: {what}: {value}, {'met' if met else 'NOT met'}"


def rss_of(argv: list[str]) -> dict[str, int]:
    """RSS of a process that runs ``argv`` and then waits on stdin (so /proc can be read)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()  # "ready"
    kb = status_kb(proc.pid)
    proc.stdin.close()
    proc.wait()
    return kb


def importtime_top(n: int) -> list[tuple[int, str]]:
    """The top-level imports with the largest cumulative time (microseconds, name)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORTS], check=True, capture_output=True, text=True
    )
    rows = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith("  "):  # " name" is top level; nested imports are indented further
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:n]


def write_config(directory: Path, moto_url: str, search_url: str) -> Path:
    path = directory / "worker.toml"
    path.write_text(
        f"""
[worker]
table = "Orders"
log_format = "json"
log_level = "warning"

[aws]
endpoint_url = "{moto_url}"

[deadletter]
url = "{directory / "dead"}"

[[aggregates]]
name = "orders_by_status"
table = "OrderStats"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}

[[aggregates]]
name = "orders_by_city"
table = "OrderStats"
group_by = ["customer.address.city"]
metrics = {{ orders = "count" }}

[search]
url = "{search_url}"
index = "orders"

[archive]
bucket = "footprint-archive"
"""
    )
    return path


def kcl_records(multilang: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "partitionKey": m["sequenceNumber"], "action": "record"} for m in multilang]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=10_000, help="records through the child (default 10,000)")
    p.add_argument("--batch", type=int, default=1000, help="records per processRecords (KCL's maxRecords)")
    p.add_argument("--repeats", type=int, default=5, help="start-up timings: best of this many (default 5)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    from worker import config
    from worker.app import build_sinks
    from worker.emulators import fake_aws_credentials, start_moto, start_osmem

    work = generate(args.records, args.seed)
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp, fake_aws_credentials():
        moto = start_moto()
        osmem = start_osmem()
        try:
            cfg_path = write_config(Path(tmp), moto.url, osmem.url)
            env = {**os.environ, "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled", "AWS_DEFAULT_REGION": "us-east-1"}
            os.environ.update(env)
            for sink in build_sinks(config.load(cfg_path, env={}), provision=True):
                sink.close()

            bare = rss_of([sys.executable, "-c", "print('ready', flush=True); import sys; sys.stdin.read()"])
            imports = rss_of(
                [sys.executable, "-c", f"{IMPORTS}; print('ready', flush=True); import sys; sys.stdin.read()"]
            )
            wall_bare, cpu_bare = best_wall([sys.executable, "-c", "pass"], args.repeats)
            wall_imports, cpu_imports = best_wall([sys.executable, "-c", IMPORTS], args.repeats)

            started = time.perf_counter()
            child = Daemon(cfg_path, subprocess.DEVNULL)
            child.call(
                {
                    "action": "initialize",
                    "shardId": work.shard_id,
                    "sequenceNumber": "TRIM_HORIZON",
                    "subSequenceNumber": 0,
                }
            )
            ready_s = time.perf_counter() - started
            after_init = status_kb(child.proc.pid)
            t = time.perf_counter()
            n_batches = 0
            for batch in batches(kcl_records(work.multilang), args.batch):
                child.call({"action": "processRecords", "millisBehindLatest": 0, "records": batch})
                n_batches += 1
            work_s = time.perf_counter() - t
            after_work = status_kb(child.proc.pid)
            child.call({"action": "leaseLost"})
            code = child.close()
        finally:
            osmem.close()
            moto.stop()

    size = sum(len(base64.b64decode(m["data"])) for m in work.multilang)
    mib = 1024.0
    print("one shard process (`worker kcl`; sinks: aggregates x2, search, archive, dead letters)")
    print(f"Python {sys.version.split()[0]}; workload: {len(work):,} records")
    print(f"({size / len(work):.0f} B of adapter JSON each), {n_batches} batches of {args.batch}")
    print()
    print(f"{'process':48s} {'VmRSS MiB':>10s} {'VmHWM MiB':>10s}")
    for label, kb in (
        ("bare python (baseline)", bare),
        ("python + the imports of worker kcl (baseline)", imports),
        ("worker kcl after initialize (sinks built)", after_init),
        ("worker kcl after the workload", after_work),
    ):
        print(f"{label:48s} {kb['VmRSS'] / mib:10.1f} {kb['VmHWM'] / mib:10.1f}")
    print()
    print(f"start-up (best of {args.repeats}):                 wall ms    CPU ms")
    print(f"  python -c pass:                           {wall_bare * 1000:7.0f} {cpu_bare * 1000:9.0f}")
    print(f"  python -c '<imports of worker kcl>':      {wall_imports * 1000:7.0f} {cpu_imports * 1000:9.0f}")
    print(
        f"  worker kcl spawn -> initialize answered:  {ready_s * 1000:7.0f} ms  (one run; includes building the sinks)"
    )
    print(f"  workload through the child: {work_s:.2f} s, {len(work) / work_s:,.0f} records/s end to end (emulators)")
    print()
    print("largest imports (python -X importtime, cumulative):")
    for us, name in importtime_top(8):
        print(f"  {us / 1000:7.1f} ms  {name}")
    print()
    rss = after_work["VmRSS"] / mib
    print(
        target(
            f"RSS of worker kcl after {len(work):,} records <= {TARGET_RSS_MIB:g} MiB",
            f"{rss:.1f} MiB",
            rss <= TARGET_RSS_MIB,
        )
    )
    ms = cpu_imports * 1000
    print(target(f"imports of worker kcl <= {TARGET_IMPORT_MS:g} ms of CPU", f"{ms:.0f} ms", ms <= TARGET_IMPORT_MS))
    if code != 0:
        raise SystemExit(f"worker kcl exited with {code}")


if __name__ == "__main__":
    main()
