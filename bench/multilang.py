"""The KCL daemon's side of the multilang pipes, for benchmarks: one ``worker kcl`` child, one batch in flight.

:class:`Daemon` starts a child and speaks the protocol as the KCL 3 multilang
daemon does (see ``launcher/PROTOCOL.md``): it writes one message line and
reads the child's lines until the ``status`` for it, answering every
``checkpoint`` request (success) on the way. :func:`messages` encodes a
workload's batches as ``processRecords`` lines. The process probes read the
child's CPU and memory from ``/proc``; :func:`start_profiler` attaches py-spy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from bench.workload import Workload, batches

__all__ = ["Daemon", "child_env", "cpu_seconds", "messages", "rss_mib", "start_profiler"]

READ_TIMEOUT = 120.0  # seconds without the awaited status: the child is killed


def decoders() -> str:
    """Which build a child runs: the same as this process (same source tree, and
    :func:`child_env` passes ``WORKER_PURE_PYTHON`` through)."""
    from worker.compiled import ACTIVE

    return "compiled (mypyc: worker.compiled.MODULES)" if ACTIVE else "pure Python"


def child_env() -> dict[str, str]:
    """The environment of the stub and the child: loopback only, no metadata probe, dummy credentials."""
    # No worker settings from the caller's environment, but for the decoders' switch (a comparison).
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER") or k == "WORKER_PURE_PYTHON"}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # a dummy: the stub checks no signature
        AWS_REGION="us-east-1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_PROFILE"):
        env.pop(name, None)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_profiler(pid: int, out: Path, *, gil: bool = False) -> subprocess.Popen[bytes]:
    """``py-spy record`` of the child (every thread, collapsed stacks), for ``--profile`` only.

    py-spy is not a dependency of the project: ``pip install py-spy`` into the
    virtualenv to use it. Sampling at 100 Hz without pausing the child. Threads
    waiting for the GIL count as busy (at the call that released it) unless
    ``gil``: then only the thread holding the GIL is sampled.
    """
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "-r", "100", "--threads"]
    proc = subprocess.Popen(
        [*cmd, "--nonblocking", *(["--gil"] if gil else [])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # attached before the first batch
    return proc


class Daemon:
    """Plays the KCL multilang daemon for one ``worker kcl`` child (one batch in flight, like KCL)."""

    def __init__(self, config: Path, stderr: IO[bytes] | int, *, launch: Sequence[str] = ("-m", "worker")) -> None:
        """Start ``python <launch> kcl --config <config>``; ``launch`` may wrap the entry point (a probe)."""
        self.proc = subprocess.Popen(
            [sys.executable, *launch, "kcl", "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=child_env(),
        )
        self.checkpoints: list[str] = []

    def send(self, message: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(message)
        self.proc.stdin.flush()

    def until_status(self, action: str) -> None:
        """Answer checkpoint requests until the child's status for ``action``.

        A child silent for :data:`READ_TIMEOUT` seconds is killed (its output then
        ends and this raises), so a hung child cannot hang the benchmark.
        """
        watchdog = threading.Timer(READ_TIMEOUT, self.proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._until_status(action)
        finally:
            watchdog.cancel()

    def _until_status(self, action: str) -> None:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the child ended while {action} was in flight (exit {self.proc.poll()})")
            if not line.strip():
                continue
            msg = orjson.loads(line)
            if msg.get("action") == "checkpoint":
                seq = msg.get("sequenceNumber")
                self.checkpoints.append(seq)
                reply = {"action": "checkpoint", "sequenceNumber": seq, "subSequenceNumber": None, "error": None}
                self.send(orjson.dumps(reply) + b"\n")
            elif msg.get("action") == "status" and msg.get("responseFor") == action:
                return
            else:
                raise RuntimeError(f"unexpected message while {action} was in flight: {msg}")

    def call(self, message: dict[str, Any]) -> None:
        self.send(orjson.dumps(message) + b"\n")
        self.until_status(message["action"])

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=READ_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def messages(work: Workload, size: int) -> list[tuple[bytes, int, str]]:
    """Each batch as the daemon's ``processRecords`` line, its record count and last sequence number."""
    out = []
    for chunk in batches(work.multilang, size):
        records = [{**m, "action": "record"} for m in chunk]
        line = orjson.dumps({"action": "processRecords", "millisBehindLatest": 1000, "records": records})
        out.append((line + b"\n", len(chunk), str(chunk[-1]["sequenceNumber"])))
    return out
