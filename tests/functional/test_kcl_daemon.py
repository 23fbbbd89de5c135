"""`worker daemon` end to end, with a fake KCL launcher in place of Java.

Java and the KCL jars cannot run here, so `WORKER_KCL_JAVA` points at a Python
script, FAKE_LAUNCHER, that behaves as the launcher does towards the daemon and
the shard process: it reads the rendered properties, starts `executableName`
(the real `worker kcl`), speaks the multilang protocol to it, and on SIGTERM
runs the graceful shutdown (shutdownRequested, leaseLost, stdin closed). The
daemon's HTTP endpoint must then report the real shard process's metrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.test_kcl_protocol import SEQ0, SHARD, orders_batch
from worker.emulators import free_port

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-11-22T00:00:00.000"

FAKE_LAUNCHER = r'''
"""Fake of the KCL launcher (worker.kcl.StreamsMultiLangLauncher), for tests only."""
import json, os, signal, subprocess, sys, time

argv = sys.argv[1:]
props = {}
for line in open(argv[-1], encoding="latin-1"):
    if line.strip() and not line.startswith("#"):
        k, _, v = line.rstrip("\n").partition(" = ")
        props[k] = v
log = open(os.environ["FAKE_LAUNCHER_LOG"], "a")
def note(**kw):
    log.write(json.dumps(kw) + "\n"); log.flush()
note(event="started", argv=argv, properties=props, metrics_dir=os.environ.get("WORKER_METRICS_DIR"),
     config=os.environ.get("WORKER_CONFIG"))
if os.environ.get("FAKE_LAUNCHER_EXIT"):
    sys.exit(int(os.environ["FAKE_LAUNCHER_EXIT"]))
signals = []
signal.signal(signal.SIGTERM, lambda s, f: signals.append(s))
signal.signal(signal.SIGINT, lambda s, f: signals.append(s))
child = subprocess.Popen(props["executableName"].split(" "), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

def call(message):
    child.stdin.write(json.dumps(message) + "\n"); child.stdin.flush()
    while True:
        line = child.stdout.readline()
        if not line:
            note(event="child ended early", code=child.wait()); sys.exit(1)
        if not line.strip():
            continue
        reply = json.loads(line)
        if reply["action"] == "checkpoint":
            note(event="checkpoint", sequence=reply["sequenceNumber"])
            child.stdin.write(json.dumps({"action": "checkpoint", "sequenceNumber": reply["sequenceNumber"],
                                          "subSequenceNumber": None, "error": None}) + "\n")
            child.stdin.flush()
            continue
        assert reply == {"action": "status", "responseFor": message["action"]}, reply
        return

call({"action": "initialize", "shardId": os.environ["FAKE_SHARD"],
      "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0})
call({"action": "processRecords", "millisBehindLatest": 0, "records": json.load(open(os.environ["FAKE_RECORDS"]))})
note(event="ready")
while not signals:
    time.sleep(0.02)
note(event="signal", signal=signals[0])
call({"action": "shutdownRequested"})
call({"action": "leaseLost"})
child.stdin.close()
note(event="child exited", code=child.wait())
sys.exit(int(os.environ.get("FAKE_EXIT_AFTER_SIGNAL", "143")))
'''


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(log: Path, event: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events(log):
            if e["event"] == event:
                return e
        if proc.poll() is not None:
            pytest.fail(f"daemon exited with {proc.returncode} before {event!r}: {events(log)}")
        time.sleep(0.05)
    pytest.fail(f"no {event!r} within {timeout} s: {events(log)}")


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Daemon:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "launcher.log"
        self.config = tmp_path / "worker.toml"
        self.config.write_text(
            f"""
[worker]
table = "Orders"
log_format = "json"

[deadletter]
url = "{tmp_path / "dead"}"

[kcl]
application_name = "orders-worker"
stream_arn = "{STREAM_ARN}"
worker_id = "worker-a"
http_host = "127.0.0.1"
http_port = {self.port}
metrics_dir = "{tmp_path / "metrics"}"
properties = {{ failoverTimeMillis = 20000, shutdownGraceMillis = 45000 }}
"""
        )
        fake = tmp_path / "fake_kcl_launcher.py"
        fake.write_text(FAKE_LAUNCHER)
        records = tmp_path / "records.json"
        records.write_text(json.dumps(orders_batch()))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "daemon", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={
                **os.environ,
                "WORKER_KCL_JAVA": sys.executable,
                "WORKER_KCL_JAVA_OPTS": str(fake),
                "WORKER_KCL_CLASSPATH_DIR": str(tmp_path / "lib"),
                "WORKER_KCL_MAIN_CLASS": "fake.Launcher",
                "FAKE_LAUNCHER_LOG": str(self.log),
                "FAKE_RECORDS": str(records),
                "FAKE_SHARD": SHARD,
                **env,
            },
        )

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"daemon did not exit: {err.decode(errors='replace')}")
        return self.proc.returncode, err.decode(errors="replace")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_daemon_serves_shard_metrics_and_forwards_sigterm(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, FAKE_EXIT_AFTER_SIGNAL="143")
    daemons.append(d)
    started = wait_for(d.log, "started", d.proc)
    props = started["properties"]
    assert started["argv"] == ["-cp", str(tmp_path / "lib" / "*"), "fake.Launcher", started["argv"][-1]]
    assert props["executableName"] == f"{sys.executable} -m worker kcl --config {d.config}"
    assert props["streamName"] == STREAM_ARN
    assert props["applicationName"] == "orders-worker"
    assert props["workerId"] == "worker-a"
    assert props["failoverTimeMillis"] == "20000"
    assert started["metrics_dir"] == str(tmp_path / "metrics")
    wait_for(d.log, "ready", d.proc)

    status, body = get(d.port, "/healthz")
    assert status == 200, body
    health = json.loads(body)
    last = str(SEQ0 + 5)
    assert health["status"] == "ok" and health["launcher"] == "running"
    assert health["shards"][SHARD]["checkpoint"] == last
    status, body = get(d.port, "/readyz")
    assert status == 200, body
    status, body = get(d.port, "/metrics")
    assert status == 200
    m = samples(body)
    assert m[("worker_launcher_up", ())] == 1
    assert m[("worker_shard_processes", ())] == 1
    assert m[("worker_records_processed_total", ())] == 5
    assert m[("worker_deadletters_total", ())] == 1
    assert m[("worker_changes_total", (("kind", "insert"),))] == 2
    assert m[("worker_checkpoints_total", ())] == 1
    assert m[("worker_last_checkpoint_record_timestamp_seconds", (("shard", SHARD),))] == 1_763_780_400
    hours = m[("worker_trim_hours_left", (("shard", SHARD),))]
    age = m[("worker_iterator_age_seconds", (("shard", SHARD),))]
    assert age > 0 and hours == pytest.approx(24 - age / 3600)  # records built "created" long ago
    assert get(d.port, "/nope")[0] == 404

    d.proc.send_signal(signal.SIGTERM)
    code, err = d.finish()
    assert code == 143, err
    names = [e["event"] for e in events(d.log)]
    assert names == ["started", "checkpoint", "ready", "signal", "checkpoint", "child exited"], names
    got = events(d.log)
    assert got[3]["signal"] == signal.SIGTERM
    assert got[4]["sequence"] == last  # shutdownRequested: checkpoint of the last durable record
    assert got[5]["code"] == 0


def test_daemon_forwards_sigint_and_exits_with_the_launchers_code(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, FAKE_EXIT_AFTER_SIGNAL="7")
    daemons.append(d)
    wait_for(d.log, "ready", d.proc)
    d.proc.send_signal(signal.SIGINT)
    code, err = d.finish()
    assert code == 7, err
    assert [e.get("signal") for e in events(d.log) if e["event"] == "signal"] == [signal.SIGINT]


def test_daemon_exits_when_the_launcher_fails(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, FAKE_LAUNCHER_EXIT="1")
    daemons.append(d)
    code, err = d.finish()
    assert code == 1, err
    assert "KCL launcher exited" in err


def test_print_properties_renders_without_starting_anything(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[kcl]\nstream_arn = "{STREAM_ARN}"\nworker_id = "w1"\n[worker]\nregion = "eu-west-1"\n')
    run = subprocess.run(
        [sys.executable, "-m", "worker", "daemon", "--config", str(cfg), "--print-properties"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert f"streamName = {STREAM_ARN}\n" in run.stdout
    assert "regionName = eu-west-1\n" in run.stdout
    assert "workerId = w1\n" in run.stdout


def test_kcl_property_options_win_and_a_malformed_one_names_the_option(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[kcl]\nstream_arn = "{STREAM_ARN}"\nproperties = {{ failoverTimeMillis = 9000 }}\n')
    base = [sys.executable, "-m", "worker", "daemon", "--config", str(cfg), "--print-properties"]
    run = subprocess.run(
        [*base, "--kcl-property", "failoverTimeMillis=3000"], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "failoverTimeMillis = 3000\n" in run.stdout
    assert "disableWorkerMetrics = false\n" in run.stdout
    bad = subprocess.run([*base, "--kcl-property", "noequals"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0
    assert "--kcl-property" in bad.stderr and "Traceback" not in bad.stderr
