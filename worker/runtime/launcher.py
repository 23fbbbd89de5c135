"""The KCL launcher (Java) as a child process: start, forward signals, report its exit.

The launcher runs in its own session, so a Ctrl-C on a terminal reaches only
``worker daemon``, which forwards it; the launcher then drives the graceful
shutdown (``shutdownRequested`` to every shard process, checkpoints, leases
released). A second signal kills it. On Linux the launcher also gets SIGTERM
if the daemon dies without forwarding (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from worker.log import get_logger

DEFAULT_CLASSPATH_DIR = "/opt/kcl/lib"
DEFAULT_MAIN_CLASS = "worker.kcl.StreamsMultiLangLauncher"


@dataclass(frozen=True)
class LauncherCommand:
    """``java [opts] -cp '<dir>/*' <main class> <properties>`` (java expands the ``*``)."""

    java: str = "java"
    java_opts: tuple[str, ...] = ()
    classpath_dir: str = DEFAULT_CLASSPATH_DIR
    main_class: str = DEFAULT_MAIN_CLASS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LauncherCommand:
        """``WORKER_KCL_JAVA``, ``WORKER_KCL_JAVA_OPTS`` (shell-split), ``WORKER_KCL_CLASSPATH_DIR``,
        ``WORKER_KCL_MAIN_CLASS``."""
        return cls(
            java=env.get("WORKER_KCL_JAVA") or "java",
            java_opts=tuple(shlex.split(env.get("WORKER_KCL_JAVA_OPTS", ""))),
            classpath_dir=env.get("WORKER_KCL_CLASSPATH_DIR") or DEFAULT_CLASSPATH_DIR,
            main_class=env.get("WORKER_KCL_MAIN_CLASS") or DEFAULT_MAIN_CLASS,
        )

    def argv(self, properties_path: str) -> list[str]:
        cp = os.path.join(self.classpath_dir, "*")
        return [self.java, *self.java_opts, "-cp", cp, self.main_class, properties_path]


class Launcher:
    """Supervises one launcher process. ``running`` is safe to read from other threads."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], log: Any = None) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log or get_logger("worker.daemon")
        self.process: subprocess.Popen[bytes] | None = None
        self.signals = 0
        self._exited = threading.Event()

    @property
    def running(self) -> bool:
        return self.process is not None and not self._exited.is_set()

    def start(self) -> None:
        self.log.info("starting KCL launcher", argv=self.argv)
        try:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 - forked before any thread starts
            )
        except OSError as exc:
            from worker.errors import FatalError

            raise FatalError(f"cannot start the KCL launcher {self.argv[0]!r}: {exc}") from exc

    def forward(self, signum: int, _frame: FrameType | None = None) -> None:
        """Signal handler: the first signal is forwarded, the next ones kill."""
        proc = self.process
        if proc is None or self._exited.is_set():
            return
        self.signals += 1
        sig = signum if self.signals == 1 else signal.SIGKILL
        self.log.info("forwarding signal to the KCL launcher", signal=signal.Signals(sig).name, pid=proc.pid)
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """Wait for the launcher; its exit code (``128 + n`` when killed by signal ``n``)."""
        assert self.process is not None
        code = self.process.wait()
        self._exited.set()
        code = 128 - code if code < 0 else code
        self.log.info("KCL launcher exited", code=code)
        return code


def install_forwarding(launcher: Launcher, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    for sig in signals:
        signal.signal(sig, launcher.forward)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` setting ``PR_SET_PDEATHSIG`` (Linux), prepared before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return preexec
