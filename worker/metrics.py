"""Metrics of the shard processes, gathered into one Prometheus endpoint per container.

Shard processes (``worker kcl``) are children of the Java launcher, not of the
daemon that serves ``/metrics``, so they cannot share memory with it. The design
is a directory of small JSON files (``[kcl] metrics_dir``, handed down as
``WORKER_METRICS_DIR``):

* each shard process owns one file, ``<shard>.<pid>.json``, and rewrites it
  whole after every batch and checkpoint (write to a temporary file, then
  ``os.replace``: a reader sees the old or the new snapshot, never a torn one);
  a process writes nothing else and never reads it back;
* the daemon reads every file on each scrape. A file whose process ended
  (state ``closed``/``failed`` or the pid gone) is *retired*: its counters are
  added to the daemon's in-memory totals and the file is deleted. Totals stay
  monotonic while shards (which DynamoDB Streams rolls over every few hours)
  come and go, and per-shard series exist only for live shards, so label
  cardinality stays bounded over months.

Counters are per container since the daemon started (a restart is a counter
reset, which Prometheus' ``rate()`` handles). Per-shard gauges:

* iterator age: when the last batch was processed, its newest record's age
  (``now - ApproximateCreationDateTime``), as Lambda defines IteratorAge;
* seconds left before the oldest unprocessed record is trimmed (24 h retention):
  during a batch, from its oldest record's age now; between batches, from the
  iterator age (the next record is at least that new);
* the last checkpoint: when it was written, and the creation time of the
  record it covers (the exact sequence number is in ``/healthz``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from worker.canonical import STREAM_RETENTION_SECONDS
from worker.files import write_atomic

ENV_DIR = "WORKER_METRICS_DIR"
SUFFIX = ".json"
COUNTERS = ("records", "batches", "retries", "deadletters", "flushes", "checkpoints", "checkpoint_retries")


# -- shard process side -----------------------------------------------------------


class ShardMetricsFile:
    """One shard process's snapshot file; :meth:`write` replaces it atomically.

    Never raises from :meth:`write`: metrics must not stop the processing they
    describe (a failed write is retried at the next batch).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        shard_id: str,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # directory None: keep the snapshot in memory only (a child run by hand, tests).
        self.directory = Path(directory) if directory is not None else None
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.path = (self.directory or Path()) / f"{_safe(shard_id)}.{self.pid}{SUFFIX}"
        self.data: dict[str, Any] = {
            "shard": shard_id,
            "pid": self.pid,
            "state": "running",
            "started": clock(),
            "batches": 0,
            "checkpoints": 0,
            "checkpoint_retries": 0,
            "batch_started": None,
            "batch_oldest_created": None,
            "last_batch_at": None,
            "iterator_age": None,
            "checkpoint": None,
        }

    def batch_started(self, oldest_created: float | None) -> None:
        self.data["batch_started"] = self.clock()
        self.data["batch_oldest_created"] = oldest_created
        self.write()

    def batch_done(self, stats: Any, newest_created: float | None) -> None:
        now = self.clock()
        self.data["batches"] += 1
        self.data["batch_started"] = self.data["batch_oldest_created"] = None
        self.data["last_batch_at"] = now
        if newest_created is not None:
            self.data["iterator_age"] = max(0.0, now - newest_created)
        self.update(stats)

    def checkpointed(self, sequence: str | None, created: float | None) -> None:
        self.data["checkpoints"] += 1
        self.data["checkpoint"] = {"sequence": sequence, "at": self.clock(), "created": created}

    def checkpoint_retried(self) -> None:
        self.data["checkpoint_retries"] += 1

    def update(self, stats: Any) -> None:
        """Copy the pipeline's counters (:class:`worker.pipeline.Stats`) and write."""
        self.data.update(
            records=stats.records,
            changes=dict(stats.changes),
            retries=stats.retries,
            deadletters=stats.deadletters,
            flushes=stats.flushes,
            sink_seconds=dict(stats.sink_seconds),
            sink_buckets={k: list(v) for k, v in getattr(stats, "sink_buckets", {}).items()},
            unflushed_age=dict(getattr(stats, "unflushed_age", {})),
        )
        self.write()

    def close(self, stats: Any, state: str = "closed") -> None:
        self.data["state"] = state
        self.update(stats)

    def write(self) -> None:
        self.data["updated"] = self.clock()
        if self.directory is None:
            return
        try:
            write_atomic(self.path, orjson.dumps(self.data), durable=False)  # a snapshot: no fsync
        except OSError:
            pass


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:120] or "shard"


# -- daemon side --------------------------------------------------------------------


@dataclass
class Totals:
    """Counters summed over shard processes."""

    counts: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    sink_seconds: Counter[str] = field(default_factory=Counter)
    sink_buckets: Counter[tuple[str, int]] = field(default_factory=Counter)  # (sink, bucket) -> flushes

    def add(self, snap: dict[str, Any]) -> None:
        for name in COUNTERS:
            self.counts[name] += int(snap.get(name) or 0)
        self.changes.update(snap.get("changes") or {})
        self.sink_seconds.update(snap.get("sink_seconds") or {})
        for sink, counts in (snap.get("sink_buckets") or {}).items():
            self.sink_buckets.update({(sink, i): n for i, n in enumerate(counts)})

    def plus(self, other: Totals) -> Totals:
        return Totals(
            self.counts + other.counts,
            self.changes + other.changes,
            self.sink_seconds + other.sink_seconds,
            self.sink_buckets + other.sink_buckets,
        )


@dataclass(frozen=True)
class ShardView:
    """What the daemon reports about one live shard process."""

    shard: str
    pid: int
    in_flight_seconds: float  # 0 when no batch is being processed
    iterator_age: float | None
    trim_seconds_left: float | None
    checkpoint: dict[str, Any] | None
    last_batch_at: float | None
    unflushed_age: dict[str, float] = field(default_factory=dict)  # per sink, at the last snapshot


@dataclass(frozen=True)
class Snapshot:
    totals: Totals
    shards: list[ShardView]
    retired_processes: int


class Collector:
    """Reads the shard processes' files; folds finished processes into running totals.

    Thread-safe (concurrent scrapes). ``alive(pid)`` is injectable for tests.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        alive: Callable[[int], bool] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.clock = clock
        self.alive = alive or pid_alive
        self.retired = Totals()
        self.retired_processes = 0
        self._lock = threading.Lock()

    def collect(self) -> Snapshot:
        with self._lock:
            now = self.clock()
            live_totals = Totals()
            shards: list[ShardView] = []
            for path, snap in self._read():
                if snap.get("state") != "running" or not self.alive(int(snap.get("pid", 0))):
                    self.retired.add(snap)
                    self.retired_processes += 1
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                live_totals.add(snap)
                shards.append(_view(snap, now))
            shards.sort(key=lambda s: s.shard)
            return Snapshot(self.retired.plus(live_totals), shards, self.retired_processes)

    def _read(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        try:
            paths = sorted(p for p in self.directory.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))
        except OSError:
            return
        for path in paths:
            try:
                snap = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # vanished between listing and reading, or not ours
            if isinstance(snap, dict) and "shard" in snap:
                yield path, snap


def _view(snap: dict[str, Any], now: float) -> ShardView:
    started = snap.get("batch_started")
    oldest = snap.get("batch_oldest_created")
    age = snap.get("iterator_age")
    unprocessed_age = max(0.0, now - oldest) if started is not None and oldest is not None else age
    left = None if unprocessed_age is None else STREAM_RETENTION_SECONDS - unprocessed_age
    return ShardView(
        shard=str(snap["shard"]),
        pid=int(snap.get("pid", 0)),
        in_flight_seconds=max(0.0, now - started) if started is not None else 0.0,
        iterator_age=age,
        trim_seconds_left=left,
        checkpoint=snap.get("checkpoint"),
        last_batch_at=snap.get("last_batch_at"),
        unflushed_age=dict(snap.get("unflushed_age") or {}),
    )


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill()
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


# -- Prometheus exposition -------------------------------------------------------------


def render(snapshot: Snapshot, *, launcher_up: bool) -> bytes:
    """The Prometheus text exposition of ``snapshot``."""
    from prometheus_client import (
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        CollectorRegistry,
        generate_latest,
    )
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

    from worker.pipeline import FLUSH_BUCKETS

    t = snapshot.totals
    families: list[Any] = []

    def counter(name: str, doc: str, value: float) -> None:
        c = CounterMetricFamily(name, doc)
        c.add_metric([], value)
        families.append(c)

    info = InfoMetricFamily("worker_build", "The worker's version and Python")
    info.add_metric([], build_info())
    families.append(info)
    up = GaugeMetricFamily("worker_launcher_up", "1 while the KCL launcher process runs")
    up.add_metric([], 1.0 if launcher_up else 0.0)
    families.append(up)
    procs = GaugeMetricFamily("worker_shard_processes", "Shard processes (leases held) now")
    procs.add_metric([], len(snapshot.shards))
    families.append(procs)
    counter("worker_records_processed", "Stream records processed (acknowledged or not)", t.counts["records"])
    counter("worker_batches", "processRecords batches completed", t.counts["batches"])
    changes = CounterMetricFamily("worker_changes", "Changes by kind (noop: nothing changed)", labels=["kind"])
    for kind, n in sorted(t.changes.items()):
        changes.add_metric([kind], n)
    families.append(changes)
    counter("worker_retries", "Sink flush retries after transient errors", t.counts["retries"])
    counter("worker_deadletters", "Records parked to dead letters", t.counts["deadletters"])
    counter("worker_checkpoints", "Checkpoints written", t.counts["checkpoints"])
    counter("worker_checkpoint_retries", "Checkpoint retries (throttling)", t.counts["checkpoint_retries"])
    latency = HistogramMetricFamily("worker_sink_flush_seconds", "Latency of each sink's flushes", labels=["sink"])
    bounds = [*(repr(b) for b in FLUSH_BUCKETS), "+Inf"]
    for sink, secs in sorted(t.sink_seconds.items()):
        running, cumulative = 0, []
        for i, bound in enumerate(bounds):
            running += t.sink_buckets[(sink, i)]
            cumulative.append((bound, float(running)))
        latency.add_metric([sink], cumulative, sum_value=secs)
    families.append(latency)

    def gauge(name: str, doc: str, pick: Callable[[ShardView], float | None]) -> None:
        g = GaugeMetricFamily(name, doc, labels=["shard"])
        for s in snapshot.shards:
            v = pick(s)
            if v is not None:
                g.add_metric([s.shard], v)
        families.append(g)

    gauge(
        "worker_iterator_age_seconds",
        "Age of the newest record of the last batch when processed",
        lambda s: s.iterator_age,
    )
    gauge(
        "worker_trim_seconds_left",
        "Seconds before the oldest unprocessed record is trimmed (24 h retention)",
        lambda s: s.trim_seconds_left,
    )
    gauge(
        "worker_batch_in_flight_seconds",
        "How long the current batch has been processing",
        lambda s: s.in_flight_seconds,
    )
    gauge(
        "worker_last_checkpoint_timestamp_seconds",
        "When the last checkpoint was written",
        lambda s: (s.checkpoint or {}).get("at"),
    )
    gauge(
        "worker_last_checkpoint_record_timestamp_seconds",
        "ApproximateCreationDateTime of the checkpointed record",
        lambda s: (s.checkpoint or {}).get("created"),
    )

    fresh = GaugeMetricFamily(
        "worker_sink_unflushed_age_seconds",
        "Per sink, age of its oldest record not yet durable (at the shard's last snapshot)",
        labels=["shard", "sink"],
    )
    for s in snapshot.shards:
        for sink, age in sorted(s.unflushed_age.items()):
            fresh.add_metric([s.shard, sink], age)
    families.append(fresh)

    class _Static:
        def collect(self) -> Iterator[Any]:
            yield from families
            yield from PROCESS_COLLECTOR.collect()  # the daemon's own process_* series
            yield from PLATFORM_COLLECTOR.collect()  # python_info
            yield from GC_COLLECTOR.collect()  # python_gc_*

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static())  # type: ignore[arg-type]
    return bytes(generate_latest(registry))


def build_info() -> dict[str, str]:
    import platform

    from worker import version

    return {"version": version(), "python": platform.python_version()}


def status(snapshot: Snapshot, *, launcher_up: bool, stall_seconds: float) -> tuple[bool, bool, dict[str, Any]]:
    """``(healthy, ready, body)`` for ``/healthz`` and ``/readyz``.

    Healthy: the launcher runs. Ready: healthy, and no shard has had a batch in
    flight for ``stall_seconds`` or more (a sink stuck in retries).
    """
    stalled = [s.shard for s in snapshot.shards if s.in_flight_seconds >= stall_seconds]
    body = {
        "launcher": "running" if launcher_up else "stopped",
        "stalled": stalled,
        "shards": {
            s.shard: {
                "pid": s.pid,
                "checkpoint": (s.checkpoint or {}).get("sequence"),
                "checkpoint_at": (s.checkpoint or {}).get("at"),
                "in_flight_seconds": round(s.in_flight_seconds, 3),
                "iterator_age_seconds": s.iterator_age,
                "trim_seconds_left": s.trim_seconds_left,
            }
            for s in snapshot.shards
        },
    }
    return launcher_up, launcher_up and not stalled, body
