"""The ``worker`` command as the functional tests run it: a real process from the project root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_worker(
    *args: str, env: Mapping[str, str] | None = None, extra_env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m worker <args>`` in the project root, output captured, never raising on its exit code.

    ``env`` replaces the environment (default: this process's); ``extra_env`` is added to it.
    The metadata endpoint is always off: nothing may leave loopback.
    """
    environment = {**(os.environ if env is None else env), **(extra_env or {}), "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )
