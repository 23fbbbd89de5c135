"""Embedded emulators for local runs and tests: moto (server mode), osmem-server,
and a real OpenSearch node (``opensearch-node/``, a JVM child).

All listen on loopback only, on free ports, and stop with their owner.
moto runs as a child process (``python -m moto.server``) so that the worker
under test talks to it over real HTTP, exactly as it talks to AWS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

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


def start_moto(timeout: float = 30.0, *, env: Mapping[str, str] | None = None) -> Moto:
    """A moto server on a free loopback port; ``env`` adds variables to its environment
    (``INITIAL_NO_AUTH_ACTION_COUNT=n``: moto's IAM mode, every request after the first ``n`` is
    authenticated and authorized against the IAM policies created in that server)."""
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
        env={**os.environ, **env} if env else None,
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


# -- a real OpenSearch node ----------------------------------------------------------------

OPENSEARCH_NODE_DIR = Path(__file__).resolve().parents[1] / "opensearch-node"
OPENSEARCH_HEAP = "512m"


@dataclass
class EmbeddedOpenSearch:
    """A single-node OpenSearch 2.x in a JVM child (``opensearch-node/``), on loopback.

    The child stops when its stdin closes, so it dies with this process even
    when :meth:`stop` is never called. ``version`` is the engine's own
    (``GET /`` ``version.number``); ``started_in`` the seconds until green/yellow.
    """

    process: subprocess.Popen[bytes]
    url: str
    version: str
    home: Path
    started_in: float

    def stop(self) -> None:
        """Close the node's stdin (it shuts down), then wait; kill after 20 s."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                if self.process.stdin is not None:
                    self.process.stdin.close()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def rss_bytes(self) -> int:
        """The JVM's resident set size now (Linux ``/proc``), 0 once it exited."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0


def opensearch_classpath(node_dir: Path = OPENSEARCH_NODE_DIR) -> str:
    """The runner's classpath; FatalError naming the build command when it is not built."""
    jar = node_dir / "target" / "opensearch-node.jar"
    if not jar.is_file():
        raise FatalError(f"the embedded OpenSearch node is not built ({jar} missing): run `bash .ci/dev build`")
    return f"{jar}{os.pathsep}{node_dir / 'target' / 'lib' / '*'}"


def start_opensearch(
    timeout: float = 180.0, *, node_dir: Path = OPENSEARCH_NODE_DIR, java: str = "java"
) -> EmbeddedOpenSearch:
    """Start a real OpenSearch node; returns once ``_cluster/health`` is green or yellow.

    Its data lives in a fresh temporary directory, removed by :meth:`EmbeddedOpenSearch.stop`.
    """
    classpath = opensearch_classpath(node_dir)
    home = Path(tempfile.mkdtemp(prefix="worker-opensearch-"))
    began = time.monotonic()
    proc = subprocess.Popen(
        [
            java,
            f"-Xms{OPENSEARCH_HEAP}",
            f"-Xmx{OPENSEARCH_HEAP}",
            "-XX:+UseSerialGC",
            "-cp",
            classpath,
            "worker.opensearch.EmbeddedNode",
            str(home),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(home / "node.log").open("wb"),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()  # the runner prints its URL once started
        if not line.startswith("http://127.0.0.1:"):
            tail = (home / "node.log").read_text(errors="replace")[-2000:]
            raise FatalError(f"the embedded OpenSearch node did not start (exit {proc.poll()}): {tail}")
        url = line
        deadline = began + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_cluster/health?wait_for_status=yellow&timeout=5s", timeout=10):
                    break
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise FatalError(f"the embedded OpenSearch node at {url} is not healthy: {exc}") from exc
                time.sleep(0.2)
        with urllib.request.urlopen(url, timeout=10) as resp:
            version = str(orjson.loads(resp.read())["version"]["number"])
    except BaseException:
        node = EmbeddedOpenSearch(proc, "", "", home, 0.0)
        node.stop()
        raise
    return EmbeddedOpenSearch(proc, url, version, home, time.monotonic() - began)


def search_engine(url: str, name: str) -> dict[str, str]:
    """What ``worker local`` reports about the search engine at ``url`` (from ``GET /``)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        info = orjson.loads(resp.read())
    version = info.get("version", {})
    return {
        "name": name,
        "distribution": str(version.get("distribution", "")),
        "version": str(version.get("number", "")),
        # SearchSink.report refreshes the index before it scans: every write is in the report.
        "refresh": "the report refreshes the index before reading it",
    }


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
