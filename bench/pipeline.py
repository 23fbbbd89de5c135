"""Records per second on one core: the worker's decode, diff and pipeline against three baselines.

Every stack reads the same input bytes of one workload (:mod:`bench.workload`),
in one process and one run, timed in CPU seconds (``time.process_time``), best
of ``--repeats`` runs, with the garbage collector on as in normal operation.

Stacks (each computes the decoded images and their diff, or what the worker
computes instead; see ``bench/README.md``):

(a) ``json`` + boto3's ``TypeDeserializer`` + ``deepdiff.DeepDiff``;
(b) ``json`` + Lambda Powertools' ``DynamoDBStreamEvent`` data classes + ``dictdiffer.diff``;
(c) an eager fast stack: ``orjson`` + a tight recursive decoder + a recursive diff;
worker rows: ``decode`` and ``decode + diff`` from adapter JSON text, and the
whole ``Pipeline`` from multilang records (base64 of adapter JSON) into a
``MemorySink``, 1,000 records per ``process`` call.

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
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from bench.workload import Workload, batches, generate
from worker.diff import Change, diff
from worker.pipeline import Pipeline
from worker.records import RawRecord, decode
from worker.sinks.memory import MemoryDeadLetters, MemorySink

TARGET_VS_A = 35.0
TARGET_VS_C = 2.0
TARGET_US = 25.0


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
        yield [str(k) for k in DeepDiff(old, new).affected_root_keys]


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


# -- the worker ------------------------------------------------------------------------


def changes_worker(raws: Iterable[RawRecord]) -> Iterable[Change]:
    """The worker's changes from adapter JSON text: ``diff(decode(raw))``."""
    for raw in raws:
        yield diff(decode(raw))


def read_images(change: Change) -> None:
    """A ``MemorySink.reject`` hook that accepts everything after reading the key and both images."""
    _ = change.key, change.old, change.new


def run_pipeline(record_batches: list[list[RawRecord]], reject: Callable[[Change], None] | None = None) -> int:
    """The whole pipeline into a ``MemorySink``; flushed changes are dropped as a real target would."""
    sink = MemorySink(reject=reject)
    pipeline = Pipeline([sink], MemoryDeadLetters())
    done = 0
    for batch in record_batches:
        pipeline.process(batch)
        done += len(sink.flushed)
        sink.flushed.clear()
    return done


# -- timing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    seconds: float  # best CPU seconds for the whole workload
    records: int
    repeats: int
    role: str = ""  # "a", "c" or "target" for the ratios

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
    runs: int = 0


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
            if t.runs >= 2 and t.spent >= budget:
                continue
            gc.collect()
            start = time.process_time()
            fn()
            took = time.process_time() - start
            t.best = min(t.best, took)
            t.spent += took
            t.runs += 1
            print(f"  round {_round + 1}: {name}: {took / records * 1e6:.1f} us/record", file=sys.stderr, flush=True)
    return [Result(name, t.best, records, t.runs, role) for (name, _fn, role), t in zip(stacks, timings, strict=True)]


def run_stacks(work: Workload, repeats: int, budget: float, batch: int) -> list[Result]:
    n = len(work)
    texts = work.adapter
    adapter = work.raw_adapter()
    multilang = batches(work.raw_multilang(), batch)
    stacks: list[tuple[str, Callable[[], object], str]] = [
        ("(a) json + boto3 TypeDeserializer + deepdiff", lambda: consume(changes_a(texts)), "a"),
        ("(b) Powertools data classes + dictdiffer", lambda: consume(changes_b(texts)), ""),
        ("(c) orjson + tight decoder: decode only", lambda: consume(decoded_c(texts)), ""),
        ("(c) orjson + tight decoder + recursive diff", lambda: consume(changes_c(texts)), "c"),
        ("worker decode (adapter JSON -> StreamRecord)", lambda: consume(decode(r) for r in adapter), ""),
        ("worker decode + diff (adapter JSON -> Change)", lambda: consume(changes_worker(adapter)), ""),
        ("worker pipeline (multilang -> MemorySink)", lambda: run_pipeline(multilang), "target"),
        ("worker pipeline, sink reads key + both images", lambda: run_pipeline(multilang, read_images), ""),
    ]
    return measure(stacks, n, repeats, budget)


# -- memory --------------------------------------------------------------------------------


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


def rss_child(path: str, batch: int) -> None:
    """Child process: import the worker, run the pipeline over the records in ``path``, print peak RSS."""
    after_import = _maxrss_kb()  # the caller imported only this module's light dependencies ...
    raws: list[RawRecord] = []
    processed = 0
    sink = MemorySink()
    pipeline = Pipeline([sink], MemoryDeadLetters())
    with open(path, "rb") as fh:
        for line in fh:
            m = orjson.loads(line)
            raws.append(RawRecord(m, f"{m['partitionKey']}/{m['sequenceNumber']}", "shardId-bench"))
            if len(raws) == batch:
                pipeline.process(raws)
                processed += len(sink.flushed)
                sink.flushed.clear()
                raws = []
    if raws:
        pipeline.process(raws)
        processed += len(sink.flushed)
    print(json.dumps({"after_import_kb": after_import, "peak_kb": _maxrss_kb(), "records": processed}))


_IMPORT_ONLY = "import resource, worker.pipeline; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
_BARE = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


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
    assert report["records"] == len(work), report
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
    a = next(r for r in results if r.role == "a")
    c = next(r for r in results if r.role == "c")
    t = next(r for r in results if r.role == "target")

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        f"target: pipeline >= {TARGET_VS_C:g}x (c): {c.seconds / t.seconds:.2f}x, {mark(c.seconds / t.seconds >= TARGET_VS_C)}",
        f"target: pipeline >= {TARGET_VS_A:g}x (a): {a.seconds / t.seconds:.1f}x, {mark(a.seconds / t.seconds >= TARGET_VS_A)}",
        f"target: pipeline <= {TARGET_US:g} us of CPU per record: {t.us:.1f} us, {mark(t.us <= TARGET_US)}",
    ]


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
    p.add_argument("--repeats", type=int, default=5, help="runs per stack; the best counts (default 5)")
    p.add_argument("--budget", type=float, default=60.0, help="stop repeating a stack after this many CPU seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=1000, help="records per Pipeline.process call (KCL's maxRecords)")
    p.add_argument("--no-rss", action="store_true", help="skip the resident-memory measurement")
    p.add_argument("--rss-child", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.batch)
        return
    work = generate(args.records, args.seed)
    print(describe(work))
    print(f"one process, CPU time (process_time), best of up to {args.repeats} runs, GC on; Python {sys.version.split()[0]}")
    results = run_stacks(work, args.repeats, args.budget, args.batch)
    print()
    print(table(results))
    print()
    for line in verdict(results):
        print(line)
    if not args.no_rss:
        rss = measure_rss(work, args.batch)
        print()
        print(f"peak RSS, bare python:                       {rss['python_kb'] / 1024:6.1f} MiB")
        print(f"peak RSS, after import worker.pipeline:      {rss['import_kb'] / 1024:6.1f} MiB")
        print(f"peak RSS, after the workload through worker: {rss['pipeline_kb'] / 1024:6.1f} MiB (batches of {args.batch})")


if __name__ == "__main__":
    main()
