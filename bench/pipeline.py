"""Records per second on one core: the worker's decode, diff and pipeline against three baselines.

Every stack reads the same input bytes of one workload (:mod:`bench.workload`),
in one process and one run, timed in CPU seconds (``time.process_time``), best
of ``--repeats`` runs, with the garbage collector on and set as in a shard
process (``--gc shard``, the default: :func:`worker.sources.kcl.settle_heap`,
which ``worker kcl`` runs once its start-up is done; every stack, baselines
included, runs under it). ``--gc default`` keeps Python's own thresholds.

Stacks (each computes the decoded images and their diff, or what the worker
computes instead; see ``bench/README.md``):

(a) ``json`` + boto3's ``TypeDeserializer`` + ``deepdiff.DeepDiff``;
(b) ``json`` + Lambda Powertools' ``DynamoDBStreamEvent`` data classes + ``dictdiffer.diff``;
(c) an eager fast stack: ``orjson`` + a tight recursive decoder + a recursive diff;
worker rows: ``decode`` and ``decode + diff`` from adapter JSON text, and the
whole ``Pipeline`` from multilang records (base64 of adapter JSON) into a
``MemorySink``, 1,000 records per ``process`` call; and the whole pipeline
into **all three real sinks** (aggregates, search, archive) whose network
calls go to I/O stubs (:mod:`bench.stubs`) that accept the serialized
requests and drop them: the CPU of a shard process with every sink.

It also reports the peak resident memory of a fresh process that imports the
worker and runs the pipeline over the workload (KCL runs one per shard).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from bench.workload import Workload, generate
from worker.decode import decode
from worker.diff import Change, diff
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.testing import MemoryDeadLetters, MemorySink

TARGET_VS_A = 35.0
TARGET_VS_C = 2.0
TARGET_US = 25.0
TARGET_ALL_US = 25.0  # the pipeline with all three sinks' CPU work (I/O stubs)
TARGET_ALL_VS_C = 1.5


# -- (a) json + boto3 TypeDeserializer + deepdiff ---------------------------------------


def _boto3_deserializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    class JsonTypeDeserializer(TypeDeserializer):  # type: ignore[misc]
        """boto3's deserializer expects bytes for B; JSON text carries base64."""

        def _deserialize_b(self, value: Any) -> Any:
            return super()._deserialize_b(base64.b64decode(value))

    return JsonTypeDeserializer()


def changes_a(texts: Iterable[bytes]) -> Iterable[list[str]]:
    """Top-level names changed per record, by stack (a)."""
    from deepdiff import DeepDiff

    deser = _boto3_deserializer().deserialize
    for text in texts:
        rec = json.loads(text)
        ddb = rec["dynamodb"]
        _ = rec["eventName"], ddb["SequenceNumber"], {k: deser(v) for k, v in ddb["Keys"].items()}
        old = {k: deser(v) for k, v in (ddb.get("OldImage") or {}).items()}
        new = {k: deser(v) for k, v in (ddb.get("NewImage") or {}).items()}
        report = DeepDiff(old, new)
        names = [str(k) for k in report.affected_root_keys]
        if report and not names:  # deepdiff reports ``root`` when one side is empty (INSERT, REMOVE)
            names = [*new, *(k for k in old if k not in new)]
        yield names


# -- (b) Powertools data classes + dictdiffer ------------------------------------------


def changes_b(texts: Iterable[bytes]) -> Iterable[list[str]]:
    """Top-level names changed per record, by stack (b)."""
    import dictdiffer
    from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent

    for text in texts:
        event = DynamoDBStreamEvent({"Records": [json.loads(text)]})
        for rec in event.records:
            ddb = rec.dynamodb
            assert ddb is not None
            _ = rec.event_name, ddb.sequence_number, ddb.keys
            out: list[str] = []
            for kind, node, detail in dictdiffer.diff(ddb.old_image, ddb.new_image):
                if node in ("", []):  # add/remove of top-level keys
                    out.extend(str(k) for k, _v in detail)
                else:
                    out.append(str(node.split(".", 1)[0] if isinstance(node, str) else node[0]))
                    assert kind in ("change", "add", "remove")
            yield out


# -- (c) orjson + a tight recursive decoder + a recursive diff --------------------------


def decode_c(av: dict[str, Any]) -> Any:
    """A tight AttributeValue decoder (N -> Decimal, sets -> frozenset, B -> bytes), no validation."""
    for tag, v in av.items():
        if tag == "S":
            return v
        if tag == "N":
            return Decimal(v)
        if tag == "M":
            return {k: decode_c(x) for k, x in v.items()}
        if tag == "L":
            return [decode_c(x) for x in v]
        if tag == "BOOL":
            return v
        if tag == "NULL":
            return None
        if tag == "SS":
            return frozenset(v)
        if tag == "NS":
            return frozenset(map(Decimal, v))
        if tag == "B":
            return binascii.a2b_base64(v)
        if tag == "BS":
            return frozenset(map(binascii.a2b_base64, v))
        raise ValueError(f"unknown tag {tag}")
    raise ValueError("empty attribute value")


def diff_c(old: Any, new: Any, path: str, out: list[str]) -> None:
    """A recursive diff of decoded values (same paths as the worker's)."""
    if type(old) is not type(new):
        out.append(path)
    elif type(old) is dict:
        for k, v in new.items():
            sub = f"{path}.{k}" if path else k
            if k in old:
                diff_c(old[k], v, sub, out)
            else:
                out.append(sub)
        out.extend(f"{path}.{k}" if path else k for k in old if k not in new)
    elif type(old) is list:
        common = min(len(old), len(new))
        for i in range(common):
            diff_c(old[i], new[i], f"{path}[{i}]", out)
        out.extend(f"{path}[{i}]" for i in range(common, max(len(old), len(new))))
    elif old != new:
        out.append(path)


def changes_c(texts: Iterable[bytes]) -> Iterable[list[str]]:
    """Changed paths per record, by stack (c)."""
    loads = orjson.loads
    for text in texts:
        rec = loads(text)
        ddb = rec["dynamodb"]
        _ = rec["eventName"], ddb["SequenceNumber"], {k: decode_c(v) for k, v in ddb["Keys"].items()}
        old = {k: decode_c(v) for k, v in (ddb.get("OldImage") or {}).items()}
        new = {k: decode_c(v) for k, v in (ddb.get("NewImage") or {}).items()}
        out: list[str] = []
        diff_c(old, new, "", out)
        yield out


def decoded_c(texts: Iterable[bytes]) -> Iterable[Any]:
    """Stack (c) without the diff: parse and decode both images."""
    loads = orjson.loads
    for text in texts:
        ddb = loads(text)["dynamodb"]
        yield (
            {k: decode_c(v) for k, v in ddb["Keys"].items()},
            {k: decode_c(v) for k, v in (ddb.get("OldImage") or {}).items()},
            {k: decode_c(v) for k, v in (ddb.get("NewImage") or {}).items()},
        )


def held(items: Iterable[Any], batch: int) -> int:
    """Consume ``items`` keeping each batch of ``batch`` alive until the batch is complete, as a
    sink holds a batch's changes until its flush; how many there were."""
    kept: list[Any] = []
    n = 0
    for item in items:
        n += 1
        kept.append(item)
        if len(kept) == batch:
            kept = []
    return n


# -- the worker ------------------------------------------------------------------------


def changes_worker(raws: Iterable[RawRecord]) -> Iterable[Change]:
    """The worker's changes from adapter JSON text: ``diff(decode(raw))``."""
    for raw in raws:
        yield diff(decode(raw))


def read_images(change: Change) -> None:
    """A ``MemorySink.reject`` hook that accepts everything after reading the key and both images."""
    _ = change.key, change.old, change.new


@dataclass(frozen=True)
class Timed:
    """CPU seconds a run measured itself, and the changes it produced."""

    seconds: float
    changes: int


def run_pipeline(record_batches: Iterable[list[RawRecord]], reject: Callable[[Change], None] | None = None) -> Timed:
    """The whole pipeline into a ``MemorySink``, one ``process`` call per batch.

    Times ``process`` and the sink dropping its flushed changes (as a real
    target's buffer is dropped once durable); making each batch's RawRecords
    is the source's work and is not timed.
    """
    sink = MemorySink(reject=reject)
    pipeline = Pipeline([sink], MemoryDeadLetters())
    clock = time.process_time
    spent = 0.0
    done = 0
    for batch in record_batches:
        start = clock()
        pipeline.process(batch)
        done += len(sink.flushed)
        sink.flushed.clear()
        spent += clock() - start
    return Timed(spent, done)


def all_sinks() -> list[Any]:
    """The three real sinks over I/O stubs (:mod:`bench.stubs`)."""
    from bench.stubs import StubDynamoDB, StubS3, StubSearch
    from worker.config import AggregateSection, SearchSection
    from worker.sinks.aggregates.sink import AggregatesSink
    from worker.sinks.archive import ArchiveSink
    from worker.sinks.search.sink import SearchSink

    aggregates = [
        AggregateSection(
            name="by_status", table="Stats", group_by=["status"], metrics={"orders": "count", "revenue": "sum(total)"}
        ),
        AggregateSection(
            name="by_city_status",
            table="Stats",
            group_by=["customer.address.city", "status"],
            metrics={"orders": "count", "revenue": "sum(total)"},
        ),
    ]
    return [
        AggregatesSink(StubDynamoDB(), aggregates, concurrency=1),  # type: ignore[arg-type]
        SearchSink(StubSearch(), SearchSection(url="http://stub.invalid", index="bench")),  # type: ignore[arg-type]
        ArchiveSink(StubS3(), "stub", "changes/", table="Orders"),  # type: ignore[arg-type]
    ]


def run_all_sinks(record_batches: Iterable[list[RawRecord]]) -> Timed:
    """The whole pipeline into the three real sinks over I/O stubs, as a shard process runs it.

    Per batch: ``add`` (sinks flushed by their cadence) then ``commit``; a
    final ``flush`` writes what is left. Everything the pipeline and the sinks
    do is timed; the stubs only count.
    """
    # Flushes one after the other: the stubs do not wait, so there is nothing for side-by-side
    # flushes to overlap, and their threads would only contend for the interpreter lock (paired
    # runs: about 170 us per record one after the other, 220 side by side). `bench e2e` measures
    # the production setting against service latencies.
    pipeline = Pipeline(all_sinks(), MemoryDeadLetters(), parallel_flush=False)
    clock = time.process_time
    spent = 0.0
    done = 0
    for batch in record_batches:
        start = clock()
        pipeline.add(batch)
        pipeline.commit()
        spent += clock() - start
        done += len(batch)
    start = clock()
    pipeline.flush()
    spent += clock() - start
    return Timed(spent, done)


# -- timing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    seconds: float  # best CPU seconds for the whole workload
    records: int
    repeats: int
    role: str = ""  # "a", "c", "target", "all", "eager" or "reads": the rows the targets compare
    runs: tuple[float, ...] = ()  # CPU seconds of each round's run

    @property
    def us(self) -> float:
        return self.seconds / self.records * 1e6

    @property
    def per_second(self) -> float:
        return self.records / self.seconds


def consume(items: Iterable[Any]) -> int:
    n = 0
    for _ in items:
        n += 1
    return n


@dataclass
class _Timing:
    best: float = float("inf")
    spent: float = 0.0
    runs: list[float] = field(default_factory=list)


def measure(
    stacks: list[tuple[str, Callable[[], object], str]], records: int, repeats: int, budget: float
) -> list[Result]:
    """Best CPU time of each stack over ``repeats`` rounds.

    Rounds run every stack once, in turn, so that a change in the machine's
    load reaches every stack alike; a stack stops repeating once it has spent
    ``budget`` CPU seconds (after at least two runs).
    """
    timings = [_Timing() for _ in stacks]
    for _round in range(repeats):
        for (name, fn, _role), t in zip(stacks, timings, strict=True):
            if len(t.runs) >= 2 and t.spent >= budget:
                continue
            gc.collect()
            start = time.process_time()
            result = fn()
            took = result.seconds if isinstance(result, Timed) else time.process_time() - start
            t.best = min(t.best, took)
            t.spent += took
            t.runs.append(took)
            print(f"  round {_round + 1}: {name}: {took / records * 1e6:.1f} us/record", file=sys.stderr, flush=True)
    return [
        Result(name, t.best, records, len(t.runs), role, tuple(t.runs))
        for (name, _fn, role), t in zip(stacks, timings, strict=True)
    ]


def run_stacks(work: Workload, repeats: int, budget: float, batch: int) -> list[Result]:
    n = len(work)
    texts = work.adapter
    # RawRecords are made inside the timed runs, a batch at a time, as a source makes them.
    adapter = work.adapter_records
    multilang = work.multilang_batches
    stacks: list[tuple[str, Callable[[], object], str]] = [
        ("(a) json + boto3 TypeDeserializer + deepdiff", lambda: consume(changes_a(texts)), "a"),
        ("(b) Powertools data classes + dictdiffer", lambda: consume(changes_b(texts)), ""),
        ("(c) orjson + tight decoder: decode only", lambda: consume(decoded_c(texts)), ""),
        ("(c) decode only, each batch held until the next", lambda: held(decoded_c(texts), batch), "eager"),
        ("(c) orjson + tight decoder + recursive diff", lambda: consume(changes_c(texts)), "c"),
        ("worker decode (adapter JSON -> StreamRecord)", lambda: consume(decode(r) for r in adapter()), ""),
        ("worker decode + diff (adapter JSON -> Change)", lambda: consume(changes_worker(adapter())), ""),
        ("worker pipeline (multilang -> MemorySink)", lambda: run_pipeline(multilang(batch)), "target"),
        (
            "worker pipeline, all sinks (aggregates + search + archive; I/O stubs)",
            lambda: run_all_sinks(multilang(batch)),
            "all",
        ),
        ("worker pipeline, sink reads key + both images", lambda: run_pipeline(multilang(batch), read_images), "reads"),
    ]
    return measure(stacks, n, repeats, budget)


# -- memory --------------------------------------------------------------------------------

# Peak RSS is read as VmHWM from /proc: ru_maxrss of a child started by a large
# parent reports the parent's high-water mark on Linux (it survives fork+exec).
_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
_BARE = f"print({_PEAK})"
_IMPORT_ONLY = f"import worker.pipeline; print({_PEAK})"


def peak_kb() -> int:
    """This process's peak resident memory (VmHWM), KiB."""
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith("VmHWM")).split()[1])


def rss_child(path: str, batch: int) -> None:
    """Child process: run the pipeline over the multilang records in ``path`` (JSON lines), print peak RSS.

    Records are read a batch at a time, as the KCL source receives them, so the
    peak is the worker's (one batch in flight), not the workload's.
    """
    raws: list[RawRecord] = []
    processed = 0
    sink = MemorySink()
    pipeline = Pipeline([sink], MemoryDeadLetters())
    with open(path, "rb") as fh:
        for line in fh:
            m = orjson.loads(line)
            raws.append(RawRecord(m, f"shardId-bench/{m['sequenceNumber']}", "shardId-bench"))
            if len(raws) == batch:
                pipeline.process(raws)
                processed += len(sink.flushed)
                sink.flushed.clear()
                raws = []
    if raws:
        pipeline.process(raws)
        processed += len(sink.flushed)
    print(json.dumps({"peak_kb": peak_kb(), "records": processed}))


def measure_rss(work: Workload, batch: int) -> dict[str, int]:
    """Peak RSS (KiB) of fresh processes: bare Python, after ``import worker.pipeline``, after the workload."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}

    def child(*args: str) -> str:
        return subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, env=env).stdout

    out = {"python_kb": int(child("-c", _BARE)), "import_kb": int(child("-c", _IMPORT_ONLY))}
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
        for m in work.multilang:
            fh.write(orjson.dumps(m) + b"\n")
        path = fh.name
    try:
        report = json.loads(child("-m", "bench.pipeline", "--rss-child", path, "--batch", str(batch)))
    finally:
        os.unlink(path)
    if report["records"] != len(work):
        raise RuntimeError(f"the child processed {report['records']} of {len(work)} records")
    out["pipeline_kb"] = report["peak_kb"]
    return out


# -- report ----------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    a = next(r for r in results if r.role == "a")
    c = next(r for r in results if r.role == "c")
    width = max(len(r.name) for r in results)
    lines = [
        f"{'stack':<{width}}  {'us/record':>9}  {'records/s/core':>14}  {'x (a)':>7}  {'x (c)':>6}  {'runs':>4}",
        f"{'-' * width}  {'-' * 9}  {'-' * 14}  {'-' * 7}  {'-' * 6}  {'-' * 4}",
    ]
    for r in results:
        lines.append(
            f"{r.name:<{width}}  {r.us:>9.1f}  {r.per_second:>14,.0f}  {a.seconds / r.seconds:>7.1f}"
            f"  {c.seconds / r.seconds:>6.2f}  {r.repeats:>4}"
        )
    return "\n".join(lines)


def verdict(results: list[Result]) -> list[str]:
    """The issue's targets for the pipeline row, met or not (informational, never an assertion)."""
    a = next(r for r in results if r.role == "a")
    c = next(r for r in results if r.role == "c")
    t = next(r for r in results if r.role == "target")
    vs_a, vs_c = a.seconds / t.seconds, c.seconds / t.seconds
    checks = [
        (f"pipeline >= {TARGET_VS_C:g}x (c)", f"{vs_c:.2f}x", vs_c >= TARGET_VS_C),
        (f"pipeline >= {TARGET_VS_A:g}x (a)", f"{vs_a:.1f}x", vs_a >= TARGET_VS_A),
        (f"pipeline <= {TARGET_US:g} us of CPU per record", f"{t.us:.1f} us", t.us <= TARGET_US),
    ]
    every = next((r for r in results if r.role == "all"), None)
    if every is not None:
        vs_c_all = c.seconds / every.seconds
        checks += [
            (f"all sinks <= {TARGET_ALL_US:g} us of CPU per record", f"{every.us:.1f} us", every.us <= TARGET_ALL_US),
            (f"all sinks >= {TARGET_ALL_VS_C:g}x (c)", f"{vs_c_all:.2f}x", vs_c_all >= TARGET_ALL_VS_C),
        ]
    eager = next((r for r in results if r.role == "eager"), None)
    reads = next((r for r in results if r.role == "reads"), None)
    if eager is not None and reads is not None:
        # What reading the key and both images adds to the pipeline, against (c) decoding them
        # eagerly. Both hold a batch of decoded images: the pipeline's sink until its flush, (c)
        # until its batch is complete. Holding is not free (the allocator cannot reuse one
        # record's memory for the next: measured, it adds a third to (c)), and the two sides
        # must pay it alike for the line to compare decoding.
        on_demand = reads.us - t.us
        checks.append(
            (
                "decoding key and images on demand <= eager decoding (c), both holding their batch",
                f"{on_demand:.1f} us vs {eager.us:.1f} us ({on_demand / eager.us:.2f}x)",
                on_demand <= eager.us,
            )
        )
    lines = [f"target: {what}: {got}, {'met' if ok else 'NOT met'}" for what, got, ok in checks]
    rounds = sorted(ct / tt for ct, tt in zip(c.runs, t.runs, strict=False))  # both ran in each of these rounds
    if rounds:
        lines.append(
            f"pipeline vs (c) round by round (same moment, same load): median {statistics.median(rounds):.2f}x,"
            f" {rounds[0]:.2f}x to {rounds[-1]:.2f}x over {len(rounds)} rounds"
        )
    return lines


def gc_settings(mode: str) -> str:
    """Set the garbage collector for every stack as ``mode`` says; the line that says how.

    ``shard``: what ``worker kcl`` does once started (the heap so far frozen, young
    generations collected less often), so the worker rows cost what they cost in a shard
    process; the baselines run under the same settings.
    """
    if mode == "shard":
        from worker.sources.kcl import settle_heap

        settle_heap()
        how = "a shard process's (worker.sources.kcl.settle_heap)"
    else:
        how = "Python's defaults"
    return f"garbage collector: {how}, thresholds {'/'.join(map(str, gc.get_threshold()))}"


def describe(work: Workload) -> str:
    sizes = [orjson.loads(t)["dynamodb"]["SizeBytes"] for t in work.adapter]
    counts = {e: work.events.count(e) for e in ("INSERT", "MODIFY", "REMOVE")}
    mix = " / ".join(f"{100 * v / len(work):.0f}% {k}" for k, v in counts.items())
    adapter = sum(map(len, work.adapter)) / len(work)
    return (
        f"workload: {len(work):,} records ({mix}); items {sum(sizes) / len(sizes):,.0f} B of image JSON on average;"
        f" records {adapter:,.0f} B of adapter JSON"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000, help="records in the workload (default 20,000)")
    p.add_argument("--repeats", type=int, default=7, help="rounds; each stack's best run counts (default 7)")
    p.add_argument("--budget", type=float, default=60.0, help="stop repeating a stack after this many CPU seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=1000, help="records per Pipeline.process call (KCL's maxRecords)")
    p.add_argument("--no-rss", action="store_true", help="skip the resident-memory measurement")
    p.add_argument(
        "--gc",
        choices=("shard", "default"),
        default="shard",
        help="garbage collector settings: a shard process's (default) or Python's own",
    )
    p.add_argument("--rss-child", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.batch)
        return
    work = generate(args.records, args.seed)
    print(describe(work))
    python = sys.version.split()[0]
    print(f"one process, CPU time (process_time), best of up to {args.repeats} runs, GC on; Python {python}")
    thresholds = gc.get_threshold()
    try:
        print(gc_settings(args.gc))
        results = run_stacks(work, args.repeats, args.budget, args.batch)
    finally:  # a caller's process (the tests call main) gets its own settings back
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    print()
    print(table(results))
    print()
    for line in verdict(results):
        print(line)
    if not args.no_rss:
        rss = measure_rss(work, args.batch)
        print()
        mib = {k: v / 1024 for k, v in rss.items()}
        print(f"peak RSS, bare python:                       {mib['python_kb']:6.1f} MiB")
        print(f"peak RSS, after import worker.pipeline:      {mib['import_kb']:6.1f} MiB")
        print(f"peak RSS, after the workload through worker: {mib['pipeline_kb']:6.1f} MiB (batches of {args.batch})")


if __name__ == "__main__":
    main()
