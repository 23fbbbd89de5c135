"""Footprint of one shard process: resident memory and start-up/import time of `worker kcl`.

KCL runs one `worker kcl` child per shard lease, so a container holding N
leases pays N times this. The measured process is real: `python -m worker kcl`
with all three sinks configured (aggregates and archive on a moto server,
search on osmem-server, dead letters in a temp dir), driven over its
stdin/stdout with the KCL 3 daemon's messages (`initialize`, then
`processRecords` batches of the bench workload, each checkpoint answered).
Resident memory is read from ``/proc/<pid>/status`` (VmRSS now, VmHWM peak).

Baselines in the same run: a bare ``python -c pass`` and a process that only
imports what the child imports, so the table separates the interpreter, the
imports, and the work. That import line is derived from a real child, not
written by hand: a probe child (the same ``worker kcl``, started through a
wrapper that writes ``sys.modules`` on SIGUSR1) is given ``initialize`` and the
first batch; the modules it holds then, in the order they were first imported,
become the import line. A fresh process running that line is checked to load
the same set of modules (any difference is printed). Import CPU is the user +
system time of that process (best of ``--repeats``), which includes the bare
interpreter's start; beside it, the packages whose modules take the most
``python -X importtime`` self time.

The worker package and amazon-kclpy (an editable install) are byte-compiled first
(``compileall``), as the image (Dockerfile) has them: there every module a shard
process imports is compiled at build time (``pip install .``, compileall for
amazon-kclpy and the standard library), and ``PYTHONDONTWRITEBYTECODE`` is set, so
a module left uncompiled would be compiled again by every shard process.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.multilang import Daemon
from bench.workload import batches, generate

# The modules in sys.modules (insertion order: the order of first import) that were imported
# under their own name: aliases (requests.packages.*, typing.io, __mp_main__) are left out,
# the modules that create them are not.
MODULES = "' '.join(n for n, m in list(sys.modules.items()) if getattr(getattr(m, '__spec__', None), 'name', 0) == n)"

# The probe's entry point: `worker kcl` as `python -m worker` runs it, plus a SIGUSR1 handler
# that writes MODULES to a file.
PROBE = f"""\
import os, runpy, signal, sys
def _dump(signum, frame, path=%r):
    with open(path + ".tmp", "w") as f:
        f.write({MODULES})
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, _dump)
runpy.run_module("worker", run_name="__main__", alter_sys=True)
"""


def child_modules(cfg_path: Path, first_batch: list[dict[str, Any]], shard_id: str, out: Path) -> list[str]:
    """The modules a real ``worker kcl`` child holds once it has answered ``initialize`` and its
    first batch, in the order they were first imported (``__main__`` left out)."""
    child = Daemon(cfg_path, subprocess.DEVNULL, launch=("-c", PROBE % str(out)))
    try:
        child.call(
            {"action": "initialize", "shardId": shard_id, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        )
        child.call({"action": "processRecords", "millisBehindLatest": 0, "records": first_batch})
        child.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not out.exists():
            if time.monotonic() > deadline or child.proc.poll() is not None:
                raise RuntimeError("the probe child did not write its modules")
            time.sleep(0.01)
        child.call({"action": "leaseLost"})
    finally:
        child.close()
    return out.read_text().split()


def import_line(modules: list[str]) -> str:
    """``python -c`` code importing ``modules`` in order (an ``import`` each: the line stays honest
    about what it loads, and a module already loaded by an earlier one costs a dictionary lookup)."""
    return "import " + ", ".join(modules)


def loaded_by(code: str) -> set[str]:
    """The modules a fresh ``python -c code`` holds at its end."""
    run = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print({MODULES})"], check=True, capture_output=True, text=True
    )
    return set(run.stdout.split())


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


def importtime_top(code: str, n: int, runs: int = 3) -> list[tuple[int, str]]:
    """The top-level packages whose modules take the most import time in ``code`` (microseconds of
    ``python -X importtime`` self time, each module's best of ``runs``, summed per package; name),
    the interpreter's start-up left out."""

    def self_times(source: str) -> dict[str, int]:
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", source], check=True, capture_output=True, text=True
        )
        out = {}
        for line in run.stderr.splitlines():
            if line.startswith("import time:") and "cumulative" not in line:
                own, _, name = line[len("import time:") :].split("|")
                out[name.strip()] = int(own)
        return out

    at_start = set(self_times("pass"))
    best: dict[str, int] = {}
    for _ in range(runs):
        for name, us in self_times(code).items():
            best[name] = min(us, best.get(name, us))
    totals: dict[str, int] = {}
    for name, us in best.items():
        if name not in at_start:
            package = name.split(".")[0]
            totals[package] = totals.get(package, 0) + us
    return sorted(((us, name) for name, us in totals.items()), reverse=True)[:n]


def write_config(directory: Path, moto_url: str, search_url: str, suffix: str = "") -> Path:
    """The configuration of a child with every sink; ``suffix`` names its own table, index, bucket."""
    path = directory / f"worker{suffix}.toml"
    path.write_text(
        f"""
[worker]
table = "Orders"
log_format = "json"
log_level = "warning"

[aws]
endpoint_url = "{moto_url}"

[deadletter]
url = "{directory / f"dead{suffix}"}"

[[aggregates]]
name = "orders_by_status"
table = "OrderStats{suffix}"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}

[[aggregates]]
name = "orders_by_city"
table = "OrderStats{suffix}"
group_by = ["customer.address.city"]
metrics = {{ orders = "count" }}

[search]
url = "{search_url}"
index = "orders{suffix}"

[archive]
bucket = "footprint-archive{suffix}"
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

    import amazon_kclpy

    import worker
    from worker import config
    from worker.app import build_sinks
    from worker.emulators import fake_aws_credentials, start_moto, start_osmem

    work = generate(args.records, args.seed)
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp, fake_aws_credentials():
        moto = start_moto()
        osmem = start_osmem()
        try:
            cfg_path = write_config(Path(tmp), moto.url, osmem.url)
            probe_cfg = write_config(Path(tmp), moto.url, osmem.url, "-probe")  # its own targets
            env = {**os.environ, "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled", "AWS_DEFAULT_REGION": "us-east-1"}
            os.environ.update(env)
            for path in (cfg_path, probe_cfg):
                for sink in build_sinks(config.load(path, env={}), provision=True):
                    sink.close()
            for package in (worker, amazon_kclpy):  # compiled as in the image (see the module docstring)
                compileall.compile_dir(str(Path(package.__file__ or "").parent), quiet=1)

            first = next(iter(batches(kcl_records(work.multilang), args.batch)))
            modules = child_modules(probe_cfg, first, work.shard_id, Path(tmp) / "modules.txt")
            imports_code = import_line(modules)
            reproduced = loaded_by(imports_code)
            missing, extra = set(modules) - reproduced, reproduced - set(modules)

            bare = rss_of([sys.executable, "-c", "print('ready', flush=True); import sys; sys.stdin.read()"])
            imports = rss_of(
                [sys.executable, "-c", f"{imports_code}; print('ready', flush=True); import sys; sys.stdin.read()"]
            )
            wall_bare, cpu_bare = best_wall([sys.executable, "-c", "pass"], args.repeats)
            wall_imports, cpu_imports = best_wall([sys.executable, "-c", imports_code], args.repeats)

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
    print(
        f"the imports of worker kcl: {len(modules)} modules, those of a real child after initialize and its first"
        " batch (probe); the import line loads "
        + ("the same set" if not (missing or extra) else f"{len(missing)} fewer and {len(extra)} more")
    )
    for label, names in (("not loaded by the line", missing), ("loaded by the line only", extra)):
        if names:
            print(f"  {label}: {' '.join(sorted(names))}")
    print()
    print("largest packages (python -X importtime, best of 3 per module, self times summed per package):")
    for us, name in importtime_top(imports_code, 8):
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
