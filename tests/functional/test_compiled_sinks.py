"""The compiled sinks send what the Python sinks send (``worker.compiled``).

The same workload runs through the pipeline and the three real sinks in two fresh processes, one
on the mypyc build and one with ``WORKER_PURE_PYTHON=1``; their I/O stubs record every request
(update expressions, bulk bodies, gzip objects) and the dead letters. Both transcripts must be
equal, byte for byte. Clocks are fixed so that a transcript is a function of its input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

import worker
from worker import compiled

ROOT = Path(worker.__file__).parent.parent

SCRIPT = """
import sys
import orjson
from bench.stubs import StubDynamoDB, StubS3, StubSearch
from bench.workload import generate
import worker.compiled
from worker.config import AggregateSection, SearchSection
from worker.pipeline import Pipeline
from worker.records import RawRecord
from worker.sinks.aggregates.sink import AggregatesSink
from worker.sinks.archive import ArchiveSink
from worker.sinks.search.sink import SearchSink
from worker.testing import MemoryDeadLetters

log = []

def recording(cls):
    class Recording(cls):
        pass
    for name in ("update_item", "transact_write_items", "batch_get_item", "mget", "bulk", "put_object"):
        if hasattr(cls, name):
            def call(self, *args, _f=getattr(cls, name), _n=name, **kwargs):
                log.append([_n, args, kwargs])
                return _f(self, *args, **kwargs)
            setattr(Recording, name, call)
    return Recording()

aggregates = [
    AggregateSection(name="by_status", table="Stats", group_by=["status"],
                     metrics={"orders": "count", "revenue": "sum(total)"}),
    AggregateSection(name="by_city", table="Stats", group_by=["customer.address.city", "status"],
                     metrics={"orders": "count", "revenue": "sum(total)", "qty": "sum(lines[0].qty)"}),
]
sinks = [
    AggregatesSink(recording(StubDynamoDB), aggregates, concurrency=1, clock=lambda: 1.8e9),
    SearchSink(recording(StubSearch), SearchSection(url="http://stub.invalid", index="orders")),
    ArchiveSink(recording(StubS3), "bucket", "changes/", table="Orders", max_records=700, clock=lambda: 0.0),
]
dead = MemoryDeadLetters()
pipeline = Pipeline(sinks, dead, parallel_flush=False)
work = generate(2500, 11)
for n, batch in enumerate(work.multilang_batches(400)):
    if n == 2:  # one record no sink can read: parked by every sink, the batch goes on
        bad = dict(batch[0].payload, data="bm90IGpzb24=")
        batch = [RawRecord(bad, "bad/1", batch[0].shard_id), *batch[1:]]
    pipeline.add(batch)
    pipeline.commit()
pipeline.flush()
parked = sorted([e.sink or "", e.reason, e.where or ""] for e in dead.parked)
sys.stdout.buffer.write(orjson.dumps(
    {"active": worker.compiled.ACTIVE, "requests": log, "parked": parked},
    default=lambda o: o.hex() if isinstance(o, bytes) else repr(o),
    option=orjson.OPT_SORT_KEYS,
))
"""


def _transcript(pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WORKER_PURE_PYTHON"}
    if pure:
        env["WORKER_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_compiled_sinks_send_what_the_python_sinks_send():
    assert compiled.ACTIVE, "no build of these sources: run `bash .ci/dev setup`"
    fast, slow = _transcript(pure=False), _transcript(pure=True)
    assert (fast["active"], slow["active"]) == (True, False)
    kinds = {r[0] for r in slow["requests"]}
    assert {"update_item", "bulk", "put_object"} <= kinds  # every sink wrote
    assert slow["parked"], "the bad record was parked"
    assert len(fast["requests"]) == len(slow["requests"])
    for i, (a, b) in enumerate(zip(fast["requests"], slow["requests"], strict=True)):
        assert a == b, f"request {i} ({b[0]}) differs"
    assert fast["parked"] == slow["parked"]
