"""A handful of real ``kill -9`` of `worker local` mid-flush, then a complete run: every sink ends
equal to the recomputation from the fixture's final items (nothing lost, nothing applied twice).

Each run processes the bundled fixtures from the start (the redelivery after a crash), on one
moto and one osmem-server that outlive the killed processes, flushing every 3 records so that a
kill lands between or inside flushes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.functional.test_local_run import BUNDLED, ROOT, final_items
from worker import config
from worker.sinks.aggregates.spec import recompute
from worker.sinks.search.docs import Projection, doc_id

KILLS = 4


def test_kill_9_mid_flush_then_a_complete_run_is_exact(tmp_path: Path, moto_url: str, osmem_url: str) -> None:
    env = {
        **os.environ,
        "AWS_EC2_METADATA_DISABLED": "true",
        "WORKER__AWS__ENDPOINT_URL": moto_url,
        "WORKER__SEARCH__URL": osmem_url,
        "WORKER__PIPELINE__MAX_BATCH_RECORDS": "3",
        "WORKER__DEADLETTER__URL": str(tmp_path / "dead"),
    }
    argv = [
        sys.executable,
        "-m",
        "worker",
        "local",
        "--config",
        "config/local.toml",
        "--json",
        "--fixtures",
        str(BUNDLED),
    ]
    rng = random.Random(9)
    killed_running = 0
    bound = 2.5  # seconds: at least a run's length; lowered to what a run that ended before its kill took
    for _ in range(3 * KILLS):  # until KILLS kills landed mid-run (a fast machine ends some runs first)
        if killed_running == KILLS:
            break
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(min(0.7, bound / 2), bound))  # start-up takes about half a second
        if proc.poll() is None:  # still working: the kill lands mid-run (else it already finished)
            killed_running += 1
            os.kill(proc.pid, signal.SIGKILL)
        else:
            bound = min(bound, time.monotonic() - started)
        proc.wait(timeout=60)
    assert killed_running >= 2  # most kills landed while the process was working

    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    items, count = final_items()
    cfg = config.load(ROOT / "config" / "local.toml", env={})
    for section in cfg.aggregates:
        assert report["aggregates"][section.name] == recompute(section, items.values()), section.name
    assert cfg.search is not None
    projection = Projection(exclude=tuple(cfg.search.exclude))
    expected_docs = {
        doc_id({"order_id": item["order_id"]}): orjson.loads(projection.dumps(projection.project(item)))
        for item in items.values()
    }
    assert report["search"] == {cfg.search.index: expected_docs}
    assert report["archive"]["records"] == count  # unique records: each archived, duplicates removed
    assert report["deadletters"] == 0
