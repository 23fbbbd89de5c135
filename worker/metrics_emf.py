"""CloudWatch Embedded Metric Format: the container's metrics as log lines, for teams without Prometheus.

With ``[kcl] emf_output = "stderr"`` (or a file path) the daemon writes one EMF
document every ``emf_interval_seconds``. CloudWatch Logs (the ``awslogs``
driver on ECS, Fluent Bit on EKS) turns it into metrics in ``emf_namespace``
with the dimension ``Application`` = ``[kcl] application_name``. Counters are
sent as the increase since the previous document (CloudWatch sums them);
per-shard gauges are reduced to the container's worst value (the oldest
iterator, the least time left before trimming), which is what alarms need.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from worker.metrics import Collector, Snapshot

# EMF name, unit, Totals counter
COUNTERS = (
    ("RecordsProcessed", "records"),
    ("DeadLetters", "deadletters"),
    ("Retries", "retries"),
    ("Checkpoints", "checkpoints"),
    ("CheckpointRetries", "checkpoint_retries"),
)


def document(
    snapshot: Snapshot,
    previous: dict[str, float],
    *,
    launcher_up: bool,
    namespace: str,
    application: str,
    now: float,
) -> dict[str, Any]:
    """One EMF document; ``previous`` (counter values last sent) is updated in place."""
    values: dict[str, tuple[float, str]] = {
        "LauncherUp": (1.0 if launcher_up else 0.0, "None"),
        "ShardProcesses": (float(len(snapshot.shards)), "Count"),
    }
    for name, key in COUNTERS:
        total = float(snapshot.totals.counts[key])
        values[name] = (max(0.0, total - previous.get(name, 0.0)), "Count")
        previous[name] = total
    ages = [s.iterator_age for s in snapshot.shards if s.iterator_age is not None]
    lefts = [s.trim_seconds_left for s in snapshot.shards if s.trim_seconds_left is not None]
    flights = [s.in_flight_seconds for s in snapshot.shards]
    if ages:
        values["MaxIteratorAgeSeconds"] = (max(ages), "Seconds")
    if lefts:
        values["MinTrimSecondsLeft"] = (min(lefts), "Seconds")
    if flights:
        values["MaxBatchInFlightSeconds"] = (max(flights), "Seconds")
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(now * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Application"]],
                    "Metrics": [{"Name": k, "Unit": unit} for k, (_, unit) in values.items()],
                }
            ],
        },
        "Application": application,
    }
    doc.update({k: v for k, (v, _) in values.items()})
    return doc


class EmfWriter:
    """Writes a document every ``interval`` seconds on a daemon thread, and a last one at :meth:`close`."""

    def __init__(
        self,
        collector: Collector,
        out: TextIO,
        *,
        launcher_up: Callable[[], bool],
        namespace: str,
        application: str,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collector, self.out, self.launcher_up = collector, out, launcher_up
        self.namespace, self.application, self.interval, self.clock = namespace, application, interval, clock
        self.previous: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emf", daemon=True)

    def emit(self) -> None:
        doc = document(
            self.collector.collect(),
            self.previous,
            launcher_up=self.launcher_up(),
            namespace=self.namespace,
            application=self.application,
            now=self.clock(),
        )
        try:
            self.out.write(orjson.dumps(doc).decode() + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # metrics never stop the worker

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.emit()
