"""Search sink throughput against osmem-server: bulk requests and documents/s per 1,000 records.

Every stack reads the same records of one workload (:mod:`bench.workload`,
~1 KB items, 20% INSERT / 70% MODIFY / 10% REMOVE) in one process and one run,
against one osmem-server on loopback, a fresh index per run, timed in wall
seconds (the work is HTTP round trips; osmem-server shares the machine's
cores), best of ``--repeats`` runs; the two stacks the transport target compares (the
worker and direct urllib3) run ``--transport-repeats`` times, alternating which goes first,
because the target compares a few tens of milliseconds of CPU.

Stacks:

* ``worker: SearchSink`` -- the whole ``Pipeline`` (decode, diff) into the
  search sink, 1,000 records per ``process`` call: per chunk one ``_mget`` and
  one ``_bulk`` with compare-and-set on the stream sequence number;
* ``worker: replay (all stale)`` -- the same records again into the filled
  index (a replay from a checkpoint): the reads find every change applied;
* ``baseline: per-record index calls`` -- the same decode and diff, the same
  document bodies, then one ``PUT _doc/<id>`` (or ``DELETE``) per record on a
  keep-alive session: the naive sink, with no ordering protection at all;
* ``transport baseline: direct urllib3`` -- the worker's stack with the same
  requests sent through a plain urllib3 pool, called directly instead of
  through botocore's HTTP session and request objects: the transport target is
  the worker's cost per record against this one, at most 10% more.

Both indexes must end with the same documents (checked and printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3

from bench.workload import Workload, batches, generate
from worker.config import SearchSection
from worker.decode import decode
from worker.diff import ChangeKind, diff
from worker.emulators import start_osmem
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.sinks.search import SearchSink
from worker.sinks.search.client import SearchClient, http_settings, query_string
from worker.sinks.search.docs import Projection, doc_id
from worker.testing import MemoryDeadLetters


@dataclass(frozen=True)
class Result:
    name: str
    records: int
    seconds: float
    requests: int
    bulks: int
    documents: int  # documents written (not counting refused stale writes)
    cpu: float = 0.0  # this process's CPU seconds (the client side; the server is another process)

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0

    def per_thousand(self, n: int) -> float:
        return n * 1000 / self.records if self.records else 0.0


class DirectUrllib3Client(SearchClient):
    """The transport baseline: a plain urllib3 pool called directly (no botocore request objects)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = urllib3.PoolManager(maxsize=8, retries=False, timeout=self.timeout)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        params: Mapping[str, str] | None,
        content_type: str,
        what: str,
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {"Content-Type": content_type} if body is not None else {}
        resp = self.pool.request(method, self.url + path + query_string(params), body=body, headers=headers)
        return resp.status, resp.headers, resp.data


def _client(url: str, cls: type[SearchClient] = SearchClient) -> SearchClient:
    base, settings = http_settings(SearchSection(url=url), "us-east-1")
    return cls(base, settings)


def run_worker(
    url: str,
    index: str,
    raws: list[RawRecord],
    batch: int,
    include: tuple[str, ...] = (),
    cls: type[SearchClient] = SearchClient,
) -> tuple[Result, SearchSink]:
    sink = SearchSink(_client(url, cls), SearchSection(url=url, index=index, include=list(include)))
    sink.ensure_index()
    sink.client.calls.clear()
    pipeline = Pipeline([sink], MemoryDeadLetters(), max_batch_records=batch)
    started, cpu = time.perf_counter(), time.process_time()
    for chunk in batches(raws, batch):
        pipeline.process(chunk)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    calls = sink.client.calls
    result = Result("", len(raws), seconds, sum(calls.values()), calls["bulk"], sink.stats["written"], cpu)
    return result, sink


def run_baseline(url: str, index: str, raws: list[RawRecord], include: tuple[str, ...] = ()) -> Result:
    """One HTTP request per record (the naive sink), same decode/diff/bodies as the worker."""
    client = _client(url)
    client.request("PUT", f"/{index}", b"{}", what="create-index")
    client.calls.clear()
    projection = Projection(include=include)
    written = 0
    started = time.perf_counter()
    for raw in raws:
        change = diff(decode(raw))
        path = f"/{index}/_doc/{quote(doc_id(change.key), safe='')}"
        if change.kind in (ChangeKind.REMOVE, ChangeKind.TTL_EXPIRE):
            client.request("DELETE", path, expect=(200, 404), what="delete")
        elif change.new is not None:
            client.request("PUT", path, projection.dumps(projection.project(change.new)), what="index")
        written += 1
    seconds = time.perf_counter() - started
    result = Result("", len(raws), seconds, sum(client.calls.values()), 0, written)
    client.close()
    return result


def _documents(client: SearchClient, index: str, strip: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    client.refresh(index)
    return {hit["_id"]: strip(hit["_source"]) for hit in client.scan(index, {"match_all": {}})}


def _best(runs: list[Result], name: str) -> Result:
    best = min(runs, key=lambda r: r.seconds)
    cpu = min(r.cpu for r in runs)
    return Result(name, best.records, best.seconds, best.requests, best.bulks, best.documents, cpu)


def table(results: list[Result]) -> str:
    base = next((r for r in results if r.name.startswith("baseline")), None)
    head = (
        f"{'stack':<34} {'records/s':>10} {'vs baseline':>12} {'HTTP req /1k rec':>17} {'bulk req /1k rec':>17}"
        f" {'docs written':>13} {'docs/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ratio = f"{r.per_second / base.per_second:.1f}x" if base and base.per_second else "-"
        lines.append(
            f"{r.name:<34} {r.per_second:>10,.0f} {ratio:>12} {r.per_thousand(r.requests):>17.1f} "
            f"{r.per_thousand(r.bulks):>17.1f} {r.documents:>13,} {r.docs_per_second:>8,.0f}"
        )
    return "\n".join(lines)


def describe(work: Workload, batch: int) -> str:
    counts = {e: work.events.count(e) for e in ("INSERT", "MODIFY", "REMOVE")}
    mix = ", ".join(f"{k} {v}" for k, v in counts.items())
    return f"workload: {len(work):,} records ({mix}), ~1 KB items; worker batches of {batch:,} records"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench search", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=2000, help="records in the workload (default 2000)")
    p.add_argument("--batch", type=int, default=1000, help="records per process() call (default 1000)")
    p.add_argument("--repeats", type=int, default=2, help="runs per stack, best kept (default 2)")
    p.add_argument(
        "--transport-repeats",
        type=int,
        default=8,
        help="runs of the worker and direct-urllib3 stacks, best kept (default 8, at least --repeats): "
        "the transport target compares a few tens of ms of CPU, which two runs leave to noise",
    )
    p.add_argument(
        "--include",
        default="",
        help="comma-separated attributes to index (default: the whole ~1 KB item); "
        "a few small fields make osmem-server's per-document indexing cost small, so request overhead shows",
    )
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    include = tuple(a for a in args.include.split(",") if a)
    work = generate(args.records, args.seed)
    raws = work.raw_multilang()
    server = start_osmem()
    try:
        clone = server.clone()
        url = clone.url
        worker_runs, replay_runs, base_runs, direct_runs = [], [], [], []
        last_sink: SearchSink | None = None

        def direct(i: int) -> Result:
            return run_worker(url, f"bench-direct-{i}", raws, args.batch, include, DirectUrllib3Client)[0]

        for i in range(args.repeats):
            if i % 2:  # alternate which transport runs first, so drift in the server favours neither
                direct_runs.append(direct(i))
            result, sink = run_worker(url, f"bench-worker-{i}", raws, args.batch, include)
            worker_runs.append(result)
            sink.client.calls.clear()
            sink.stats.clear()
            started = time.perf_counter()
            pipeline = Pipeline([sink], MemoryDeadLetters(), max_batch_records=args.batch)
            for chunk in batches(raws, args.batch):
                pipeline.process(chunk)
            calls = sink.client.calls
            replay_runs.append(
                Result(
                    "",
                    len(raws),
                    time.perf_counter() - started,
                    sum(calls.values()),
                    calls["bulk"],
                    sink.stats["written"],
                )
            )
            base_runs.append(run_baseline(url, f"bench-baseline-{i}", raws, include))
            if not i % 2:
                direct_runs.append(direct(i))
            last_sink = sink
            print(
                f"  run {i + 1}: worker {worker_runs[-1].seconds:.2f} s, baseline {base_runs[-1].seconds:.2f} s,"
                f" direct urllib3 {direct_runs[-1].seconds:.2f} s",
                file=sys.stderr,
            )
        for i in range(args.repeats, max(args.repeats, args.transport_repeats)):
            # More runs of the transport pair alone: fresh indexes, the order alternating as above.
            if i % 2:
                direct_runs.append(direct(i))
            worker_runs.append(run_worker(url, f"bench-worker-{i}", raws, args.batch, include)[0])
            if not i % 2:
                direct_runs.append(direct(i))
        results = [
            _best(worker_runs, "worker: SearchSink (mget + bulk)"),
            _best(replay_runs, "worker: replay (all stale)"),
            _best(base_runs, "baseline: per-record index calls"),
            _best(direct_runs, "transport baseline: direct urllib3"),
        ]
        assert last_sink is not None
        meta = last_sink.meta
        checker = _client(url)
        ours = _documents(checker, f"bench-worker-{args.repeats - 1}", lambda s: s)
        live = {k: {f: v for f, v in d.items() if f != meta} for k, d in ours.items() if not d[meta]["deleted"]}
        theirs = _documents(checker, f"bench-baseline-{args.repeats - 1}", lambda s: s)
        same = live == theirs
        print(describe(work, args.batch) + (f"; indexed attributes: {', '.join(include)}" if include else ""))
        print(
            f"osmem-server on loopback, wall time, best of {args.repeats} runs (the worker and direct urllib3:"
            f" {len(worker_runs)}); Python {sys.version.split()[0]}"
        )
        print()
        print(table(results))
        print()
        tombstones = len(ours) - len(live)
        print(
            f"same documents in both indexes: {'yes' if same else 'NO'} ({len(live):,} live, {tombstones:,} tombstones)"
        )
        # The transport's cost is client CPU: wall time is mostly the server's work and the
        # shared machine's noise, so the target is judged on this process's CPU per record.
        wall = [r.seconds / r.records * 1e6 for r in (results[0], results[3])]
        cpu = [r.cpu / r.records * 1e6 for r in (results[0], results[3])]
        extra = (cpu[0] / cpu[1] - 1) * 100 if cpu[1] else 0.0
        print(
            f"transport, per record: botocore HTTP session {cpu[0]:.1f} us CPU ({wall[0]:.1f} us wall), "
            f"direct urllib3 {cpu[1]:.1f} us CPU ({wall[1]:.1f} us wall)"
        )
        print(
            f"target: search transport (botocore HTTP session) CPU per record vs direct urllib3: {extra:+.1f}%, "
            + ("met" if extra <= 10.0 else "NOT met")
        )
        if not same:
            raise SystemExit("the worker's index differs from the baseline's")
    finally:
        server.close()


if __name__ == "__main__":
    main()
