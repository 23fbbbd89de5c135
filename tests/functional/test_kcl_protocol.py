"""Contract tests: `worker kcl` as a real child process, over real pipes, with the KCL 3 daemon's messages.

The messages are the exact JSON the KCL 3.4.3 multilang daemon writes (see
launcher/PROTOCOL.md): `initialize` with the TRIM_HORIZON sentinel,
`processRecords` whose records carry base64 adapter JSON, `checkpoint` replies
(with and without `error`), `leaseLost`, `shardEnded`, `shutdownRequested`.
The sinks are real: aggregates (DynamoDB) and the archive (S3) on a moto
server, dead letters in a directory. Every test also checks that stdout held
nothing but protocol lines.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker import config, shapes
from worker.app import build_sinks
from worker.archive import read_all
from worker.emulators import free_port
from worker.sinks.aggregates import create as create_aggregates

SHARD = "shardId-00000001763791200000-4f1c2a9b"
SEQ0 = 4200000000012345678000
READ_TIMEOUT = 60.0


# -- the daemon side of the pipes ---------------------------------------------------------


class KclChild:
    """Plays the KCL daemon: writes its messages to the child's stdin, reads the child's stdout."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "kcl", "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.stdout_lines: list[bytes] = []
        self.stderr_lines: list[bytes] = []
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            if line.strip():
                self._messages.put(json.loads(line))  # a non-JSON line fails the test via `protocol_only`
        self._messages.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        # Jackson's default mapper: compact JSON, one message per line.
        self.proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any] | None:
        """The next message, or None at end of output."""
        try:
            return self._messages.get(timeout=READ_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no message from the child within {READ_TIMEOUT} s; stderr:\n{self.stderr()}")

    def expect(self, **fields: Any) -> dict[str, Any]:
        msg = self.read()
        assert msg is not None, f"child ended while {fields} was expected; stderr:\n{self.stderr()}"
        assert {k: msg.get(k) for k in fields} == fields, msg
        assert set(msg) <= set(fields) | {"subSequenceNumber"}, f"extra fields the daemon would reject: {msg}"
        return msg

    def close_stdin(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.wait()

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=READ_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"child did not exit; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    def remaining(self) -> list[dict[str, Any]]:
        out = []
        while (msg := self.read()) is not None:
            out.append(msg)
        return out

    def protocol_only(self) -> None:
        """stdout held nothing but blank lines and protocol JSON (status/checkpoint)."""
        for line in self.stdout_lines:
            if line.strip():
                assert json.loads(line)["action"] in ("status", "checkpoint"), line

    # daemon messages -----------------------------------------------------------------

    def initialize(self, sequence: str | None = "TRIM_HORIZON") -> None:
        self.send({"action": "initialize", "shardId": SHARD, "sequenceNumber": sequence, "subSequenceNumber": 0})
        self.expect(action="status", responseFor="initialize")

    def process(self, records: list[dict[str, Any]], millis_behind: int | None = 1000) -> None:
        self.send({"action": "processRecords", "millisBehindLatest": millis_behind, "records": records})

    def reply_checkpoint(self, sequence: str | None, error: str | None = None) -> None:
        self.send({"action": "checkpoint", "sequenceNumber": sequence, "subSequenceNumber": None, "error": error})

    def deliver(self, records: list[dict[str, Any]]) -> None:
        """A batch the child must checkpoint at its last record and then acknowledge."""
        last = records[-1]["sequenceNumber"]
        self.process(records)
        self.expect(action="checkpoint", sequenceNumber=last)
        self.reply_checkpoint(last)
        self.expect(action="status", responseFor="processRecords")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def kcl_record(canon: dict[str, Any]) -> dict[str, Any]:
    """A record as KCL's JsonFriendlyRecord with the DynamoDB Streams adapter (PROTOCOL.md section 1)."""
    ml = shapes.render(canon, "multilang")
    seq = ml["sequenceNumber"]
    return {
        "data": ml["data"],
        "partitionKey": seq,
        "sequenceNumber": seq,
        "approximateArrivalTimestamp": ml["approximateArrivalTimestamp"],
        "subSequenceNumber": 0,
        "action": "record",
    }


def undecodable(seq: int) -> dict[str, Any]:
    return {
        "data": base64.b64encode(b'{"eventName": "INSERT", "dynamodb": ').decode(),
        "partitionKey": str(seq),
        "sequenceNumber": str(seq),
        "approximateArrivalTimestamp": 1_763_791_263_000,
        "subSequenceNumber": 0,
        "action": "record",
    }


def orders_batch(start: int = SEQ0) -> list[dict[str, Any]]:
    """o-1 paid 10, o-2 paid 5, o-1 -> shipped, o-2 removed, and one record that is not JSON."""
    o1 = {"order_id": "o-1", "status": "paid", "total": 10}
    o2 = {"order_id": "o-2", "status": "paid", "total": 5}
    o1b = {**o1, "status": "shipped"}
    return [
        kcl_record(shapes.build("INSERT", {"order_id": "o-1"}, new=o1, sequence=start + 1)),
        kcl_record(shapes.build("INSERT", {"order_id": "o-2"}, new=o2, sequence=start + 2)),
        undecodable(start + 3),
        kcl_record(shapes.build("MODIFY", {"order_id": "o-1"}, old=o1, new=o1b, sequence=start + 4)),
        kcl_record(shapes.build("REMOVE", {"order_id": "o-2"}, old=o2, sequence=start + 5)),
    ]


EXPECTED_AFTER_BATCH = {
    "orders_by_status": [{"group": {"status": "shipped"}, "metrics": {"orders": 1, "revenue": "10"}}]
}


# -- configuration and sinks ----------------------------------------------------------------


def write_config(tmp_path: Path, moto_url: str, *, s3_url: str | None = None, name: str = "worker.toml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"""
[worker]
table = "Orders"
log_format = "json"

[aws]
endpoint_url = "{moto_url}"
s3_endpoint_url = "{s3_url or moto_url}"

[pipeline]
retry_attempts = 2
retry_base_seconds = 0.01
retry_max_seconds = 0.02
flush_interval = 0.0  # every sink durable and checkpointed at every batch
commit_interval = 0.0

[deadletter]
url = "{tmp_path / "dead"}"

[[aggregates]]
name = "orders_by_status"
table = "OrderStats"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}

[archive]
bucket = "archive"
max_age_seconds = 0.0

[kcl]
checkpoint_retries = 3
"""
    )
    return path


@pytest.fixture
def cfg_path(tmp_path: Path, moto_url: str) -> Path:
    path = write_config(tmp_path, moto_url)
    for sink in build_sinks(config.load(path, env={}), provision=True):  # tables and bucket, as provisioning does
        sink.close()
    return path


@pytest.fixture
def children() -> Iterator[list[KclChild]]:
    started: list[KclChild] = []
    yield started
    for child in started:
        child.kill()


def spawn(children: list[KclChild], path: Path, **env: str) -> KclChild:
    child = KclChild(path, env)
    children.append(child)
    return child


def aggregates(path: Path) -> dict[str, Any]:
    return create_aggregates(config.load(path, env={})).report()


def archived_sequences(moto_url: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    _, records, _ = read_all(s3, "archive", "changes/")
    return [r.sequence_number for r in records]


def parked(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line) for f in sorted((tmp_path / "dead").rglob("*.jsonl")) for line in f.read_bytes().splitlines()
    ]


# -- the contract -----------------------------------------------------------------------------


def test_batch_is_durable_in_every_sink_before_its_checkpoint_and_acknowledgement(
    cfg_path: Path, tmp_path: Path, moto_url: str, children: list[KclChild]
) -> None:
    child = spawn(children, cfg_path, WORKER_METRICS_DIR=str(tmp_path / "metrics"))
    child.initialize("TRIM_HORIZON")
    batch = orders_batch()
    child.process(batch)
    last = batch[-1]["sequenceNumber"]
    child.expect(action="checkpoint", sequenceNumber=last)
    # The child now waits for the daemon's answer; the sinks already hold the whole batch.
    assert aggregates(cfg_path) == EXPECTED_AFTER_BATCH
    assert archived_sequences(moto_url) == [str(SEQ0 + i) for i in (1, 2, 4, 5)]
    dead = parked(tmp_path)
    assert [d["where"] for d in dead] == [f"{SHARD}/{SEQ0 + 3}"]
    child.reply_checkpoint(last)
    child.expect(action="status", responseFor="processRecords")

    child.send({"action": "shutdownRequested"})
    child.expect(action="checkpoint", sequenceNumber=last)
    child.reply_checkpoint(last)
    child.expect(action="status", responseFor="shutdownRequested")
    child.send({"action": "leaseLost"})
    child.expect(action="status", responseFor="leaseLost")
    assert child.close_stdin() == 0
    child.protocol_only()

    (snapshot,) = [orjson.loads(p.read_bytes()) for p in (tmp_path / "metrics").glob("*.json")]
    assert snapshot["shard"] == SHARD and snapshot["state"] == "closed"
    assert snapshot["records"] == 5 and snapshot["deadletters"] == 1 and snapshot["checkpoints"] == 2
    assert snapshot["checkpoint"]["sequence"] == last
    assert snapshot["changes"] == {"insert": 2, "modify": 1, "remove": 1}


def test_throttled_checkpoint_is_retried_then_acknowledged(
    cfg_path: Path, moto_url: str, children: list[KclChild]
) -> None:
    child = spawn(children, cfg_path)
    child.initialize()
    batch = orders_batch()
    last = batch[-1]["sequenceNumber"]
    child.process(batch)
    child.expect(action="checkpoint", sequenceNumber=last)
    child.reply_checkpoint(last, "ThrottlingException")
    child.expect(action="checkpoint", sequenceNumber=last)
    child.reply_checkpoint(last, "KinesisClientLibDependencyException")
    child.expect(action="checkpoint", sequenceNumber=last)
    child.reply_checkpoint(last)
    child.expect(action="status", responseFor="processRecords")
    assert child.close_stdin() == 0
    child.protocol_only()
    assert aggregates(cfg_path) == EXPECTED_AFTER_BATCH


def test_checkpoint_throttled_past_the_retries_still_acknowledges_the_durable_batch(
    cfg_path: Path, children: list[KclChild]
) -> None:
    child = spawn(children, cfg_path)  # [kcl] checkpoint_retries = 3
    child.initialize()
    batch = orders_batch()
    last = batch[-1]["sequenceNumber"]
    child.process(batch)
    for _ in range(3):
        child.expect(action="checkpoint", sequenceNumber=last)
        child.reply_checkpoint(last, "ThrottlingException")
    child.expect(action="status", responseFor="processRecords")
    assert child.close_stdin() == 0
    assert "checkpoint gave up" in child.stderr()


def test_shutdown_exception_on_checkpoint_is_not_retried_and_lease_lost_follows(
    cfg_path: Path, children: list[KclChild]
) -> None:
    child = spawn(children, cfg_path)
    child.initialize()
    batch = orders_batch()
    last = batch[-1]["sequenceNumber"]
    child.process(batch)
    child.expect(action="checkpoint", sequenceNumber=last)
    child.reply_checkpoint(last, "ShutdownException")
    child.expect(action="status", responseFor="processRecords")  # durable: acknowledging is safe
    child.send({"action": "leaseLost"})
    child.expect(action="status", responseFor="leaseLost")  # no checkpoint attempt after losing the lease
    assert child.close_stdin() == 0
    child.protocol_only()


def test_lease_lost_answers_without_checkpointing(cfg_path: Path, children: list[KclChild]) -> None:
    child = spawn(children, cfg_path)
    child.initialize(str(SEQ0))
    child.send({"action": "leaseLost"})
    child.expect(action="status", responseFor="leaseLost")
    assert child.close_stdin() == 0
    assert child.remaining() == []
    child.protocol_only()


def test_shard_end_is_checkpointed_with_a_null_sequence(
    cfg_path: Path, moto_url: str, children: list[KclChild]
) -> None:
    child = spawn(children, cfg_path)
    child.initialize()
    child.deliver(orders_batch())
    child.send({"action": "shardEnded"})
    child.expect(action="checkpoint", sequenceNumber=None)
    child.reply_checkpoint(None)
    child.expect(action="status", responseFor="shardEnded")
    assert child.close_stdin() == 0
    child.protocol_only()


def test_shard_end_checkpoint_refused_stops_without_acknowledging(cfg_path: Path, children: list[KclChild]) -> None:
    child = spawn(children, cfg_path)
    child.initialize()
    child.send({"action": "shardEnded"})
    child.expect(action="checkpoint", sequenceNumber=None)
    child.reply_checkpoint(None, "InvalidStateException")
    assert child.wait() == 1
    assert child.remaining() == []  # no status: the daemon redoes the shard end
    child.protocol_only()


def test_failing_sink_exits_non_zero_without_acknowledging_and_the_shard_resumes(
    cfg_path: Path, tmp_path: Path, moto_url: str, children: list[KclChild]
) -> None:
    # The archive's S3 endpoint is a closed port: its flush fails, retries run out.
    broken = write_config(tmp_path, moto_url, s3_url=f"http://127.0.0.1:{free_port()}", name="broken.toml")
    child = spawn(children, broken)
    child.initialize()
    batch = orders_batch()
    child.process(batch)
    assert child.wait() == 1
    assert child.remaining() == []  # neither a checkpoint nor a status for the batch
    child.protocol_only()
    assert "stopping without acknowledging" in child.stderr()

    # KCL restarts the shard from its last checkpoint: the same batch again, to a healthy child.
    again = spawn(children, cfg_path)
    again.initialize("TRIM_HORIZON")
    again.deliver(batch)
    assert again.close_stdin() == 0
    # The aggregates were partly written by the failed child: the redelivery counts nothing twice.
    assert aggregates(cfg_path) == EXPECTED_AFTER_BATCH
    assert archived_sequences(moto_url) == [str(SEQ0 + i) for i in (1, 2, 4, 5)]


def test_redelivered_batch_after_a_lost_acknowledgement_counts_nothing_twice(
    cfg_path: Path, moto_url: str, children: list[KclChild]
) -> None:
    first = spawn(children, cfg_path)
    first.initialize()
    batch = orders_batch()
    last = batch[-1]["sequenceNumber"]
    first.process(batch)
    first.expect(action="checkpoint", sequenceNumber=last)
    first.kill()  # dies before the checkpoint is written: KCL redelivers from TRIM_HORIZON

    second = spawn(children, cfg_path)
    second.initialize("TRIM_HORIZON")
    second.deliver(batch[:2])  # other batch boundaries this time
    second.deliver(batch[2:])
    assert second.close_stdin() == 0
    assert aggregates(cfg_path) == EXPECTED_AFTER_BATCH
    assert archived_sequences(moto_url) == [str(SEQ0 + i) for i in (1, 2, 4, 5)]


def test_empty_batch_is_acknowledged_without_a_checkpoint(cfg_path: Path, children: list[KclChild]) -> None:
    child = spawn(children, cfg_path)
    child.initialize()
    child.process([], millis_behind=None)
    child.expect(action="status", responseFor="processRecords")
    assert child.close_stdin() == 0


def test_stray_output_cannot_reach_the_protocol_stream(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from worker.commands.kcl import protocol_stdout\n"
        "proto = protocol_stdout()\n"
        "print('stray print')\n"
        "os.write(1, b'stray fd write\\n')\n"
        "os.system('echo stray subprocess')\n"
        'proto.write(\'{"action": "status", "responseFor": "initialize"}\\n\')\n'
        "proto.flush()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == '{"action": "status", "responseFor": "initialize"}\n'
    for stray in ("stray print", "stray fd write", "stray subprocess"):
        assert stray in run.stderr
