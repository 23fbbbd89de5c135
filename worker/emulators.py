"""Embedded emulators for local runs and tests: moto (server mode) and osmem-server.

Both listen on loopback only, on free ports, and stop with their owner.
moto runs as a child process (``python -m moto.server``) so that the worker
under test talks to it over real HTTP, exactly as it talks to AWS.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from worker.errors import FatalError

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Moto:
    process: subprocess.Popen[bytes]
    url: str

    def reset(self) -> None:
        """Drop every table, bucket and stream (moto's reset API)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_moto(timeout: float = 30.0) -> Moto:
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise FatalError("moto is not installed: pip install 'worker[local]'") from exc
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FatalError(f"moto server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return Moto(proc, url)
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    proc.kill()
    raise FatalError(f"moto server did not start within {timeout} s")


def start_osmem() -> Any:
    """An osmem-server process (``.url``, ``.close()``)."""
    try:
        from osmem_server import OsmemServer
    except ImportError as exc:
        raise FatalError("osmem-server is not installed: pip install 'worker[local]'") from exc
    # The server inherits our stderr and writes its own lines there ("osmem-server: exiting" at
    # every stop): give it a private file instead, shown only if it fails to start.
    import tempfile

    with tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(err.fileno(), 2)
            try:
                return OsmemServer.start(japanese=False, addr="127.0.0.1:0")
            finally:
                os.dup2(saved, 2)
        except Exception as exc:
            err.seek(0)
            detail = err.read().decode(errors="replace").strip()
            raise FatalError(f"osmem-server did not start: {exc}" + (f" ({detail})" if detail else "")) from exc
        finally:
            os.close(saved)


@contextlib.contextmanager
def fake_aws_credentials() -> Iterator[None]:
    """Credentials for emulators, without clobbering real ones the user set."""
    saved = {k: os.environ.get(k) for k in FAKE_CREDENTIALS}
    for k, v in FAKE_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
