"""The production path, end to end, with real processes: ``worker daemon`` -> Java launcher -> KCL
3 + the DynamoDB Streams Kinesis Adapter -> multilang -> ``worker kcl`` children, on moto (server
mode) and osmem-server. Each scenario ends with the exact results (see :meth:`Rig.assert_exact`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import orjson

from tests.integration.kcl.rig import Rig
from worker.runtime import local_kcl


def paced_writer(rig: Rig, n: int, pause: float = 0.03) -> threading.Thread:
    """Writes ``n`` changes in the background, ``pause`` seconds apart (so a fault lands mid-stream)."""

    def run() -> None:
        for _ in range(n):
            rig.write(1)
            threading.Event().wait(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def delivered(rig: Rig, worker_id: str = "w1") -> int:
    return sum(int(m.get("records") or 0) for m in rig.metric_files(worker_id))


def test_happy_path_then_sigterm_exits_zero_with_final_checkpoint(rig: Rig) -> None:
    rig.write(300)
    proc = rig.start()
    leases = rig.wait_checkpointed(proc)
    assert rig.stream().checkpointed(leases) == rig.stream().records >= 250
    assert local_kcl.stop_daemon(proc, grace=60) == 0
    rig.assert_exact()
    # log_format = "json": the daemon, the JVM (launcher/KCL) and the children all log JSON lines on stderr.
    lines = [line for line in (rig.tmp / "daemon-w1.log").read_text().splitlines() if line.strip()]
    jvm = 0
    for line in lines:
        entry = orjson.loads(line)
        assert {"message", "level", "timestamp", "logger"} <= set(entry), line
        jvm += str(entry.get("logger", "")).startswith(("software.amazon.kinesis", "worker.kcl"))
    assert jvm > 10


def test_sigterm_mid_stream_checkpoints_what_was_flushed_and_exits_zero(rig: Rig) -> None:
    rig.write(20)
    proc = rig.start()
    rig.wait_for("first records delivered", lambda: delivered(rig) > 0, proc)
    writer = paced_writer(rig, 300)
    rig.wait_for("more records delivered", lambda: delivered(rig) > 100, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, rig.logs()  # within the launcher's grace (shutdownGraceMillis 20 s) and then some
    # The final checkpoint: what the child flushed (its own last checkpoint) is in the lease table.
    files = rig.metric_files()
    flushed = max(int(m["checkpoint"]["sequence"]) for m in files if m.get("checkpoint"))
    (checkpoint,) = rig.leases().values()
    assert checkpoint is not None and int(checkpoint) == flushed
    writer.join()
    again = rig.start()
    rig.wait_checkpointed(again)
    assert local_kcl.stop_daemon(again, grace=60) == 0
    rig.assert_exact()


def test_kill_9_of_a_shard_process_mid_batch_then_restart(rig: Rig) -> None:
    rig.write(20)
    proc = rig.start()
    rig.wait_for("first records delivered", lambda: delivered(rig) > 0, proc)
    writer = paced_writer(rig, 300, pause=0.01)

    def in_batch() -> int:
        for m in rig.metric_files():
            if m.get("batch_started") and m.get("state") == "running":
                return int(m["pid"])
        return 0

    pid = rig.wait_for("a batch in flight", in_batch, proc)
    os.kill(pid, signal.SIGKILL)
    writer.join()
    # KCL's multilang processor ends the JVM when its child dies; whatever it does, restart it.
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        local_kcl.kill_group(proc)
    again = rig.start()
    rig.wait_checkpointed(again)
    assert local_kcl.stop_daemon(again, grace=60) == 0
    rig.assert_exact()


def test_kill_9_of_the_whole_daemon_mid_stream_then_restart(rig: Rig) -> None:
    rig.write(20)
    proc = rig.start()
    rig.wait_for("first records delivered", lambda: delivered(rig) > 0, proc)
    writer = paced_writer(rig, 300)
    rig.wait_for("more records delivered", lambda: delivered(rig) > 80, proc)
    assert rig.children(proc), "no worker kcl child in the daemon's process group"
    local_kcl.kill_group(proc)  # daemon, JVM and children at once
    writer.join()
    again = rig.start()
    rig.wait_checkpointed(again)
    assert local_kcl.stop_daemon(again, grace=60) == 0
    rig.assert_exact()


def test_two_daemons_one_killed_the_other_takes_over(rig: Rig) -> None:
    rig.write(20)
    first, second = rig.start("w1"), rig.start("w2")
    owner = rig.wait_for("a lease owner", lambda: next(iter(rig.owners().values()), None), first, timeout=240)
    procs = {"w1": first, "w2": second}
    writer = paced_writer(rig, 300)
    rig.wait_for("records delivered by the owner", lambda: delivered(rig, owner) > 50, procs[owner])
    local_kcl.kill_group(procs[owner])
    survivor_id = "w2" if owner == "w1" else "w1"
    survivor = procs[survivor_id]
    rig.wait_for(
        "the survivor takes the lease", lambda: rig.owners() == {s: survivor_id for s in rig.owners()}, survivor
    )
    writer.join()
    rig.wait_checkpointed(survivor)
    assert delivered(rig, survivor_id) > 0
    assert local_kcl.stop_daemon(survivor, grace=60) == 0
    rig.assert_exact()


def cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    """``worker checkpoints --config <rig's> ARGS...`` as a separate process."""
    env = {**os.environ, **rig.env, "AWS_EC2_METADATA_DISABLED": "true"}
    argv = [sys.executable, "-m", "worker", "checkpoints", "--config", str(rig.config_path), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_replay_from_trim_horizon_leaves_every_sink_as_it_was(rig: Rig) -> None:
    rig.write(250)
    proc = rig.start()
    leases = rig.wait_checkpointed(proc)
    (shard,) = leases
    shown = cli(rig, "show", "--json", "--no-lag")
    assert shown.returncode == 0, shown.stderr
    rows = [orjson.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["shard"], r["checkpoint"], r["owner"]) for r in rows] == [(shard, leases[shard], "w1")]
    refused = cli(rig, "reset", "--to", "trim-horizon", "--wait", "6", "--yes")
    assert refused.returncode != 0 and "held" in refused.stderr.lower(), refused.stderr
    assert rig.leases() == leases  # untouched
    assert local_kcl.stop_daemon(proc, grace=60) == 0
    before, archive_before = rig.sinks(), rig.archive_lines()

    reset = cli(rig, "reset", "--to", "trim-horizon", "--wait", "6", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert rig.leases() == {shard: "TRIM_HORIZON"}
    again = rig.start()
    rig.wait_checkpointed(again)
    assert local_kcl.stop_daemon(again, grace=60) == 0
    assert delivered(rig) == rig.stream().records  # every change delivered again...
    assert rig.sinks() == before  # ...and every sink left exactly as it was
    assert rig.archive_lines() == archive_before
    rig.assert_exact()
