"""Anticipated failures end in one clear line (what and where), a non-zero exit and no
traceback; ``--debug`` shows the traceback. Start-up retries within the time budget."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.worker_cli import run_worker
from worker.aws import ensure_bucket
from worker.errors import FatalError
from worker.sinks.aggregates.store import ensure_table

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "config" / "fixtures" / "orders.jsonl"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write(tmp: Path, body: str) -> Path:
    path = tmp / "cfg.toml"
    path.write_text(
        '[worker]\ntable = "Orders"\nregion = "us-east-1"\nlog_level = "error"\n[pipeline]\nmax_outage_seconds = 1\n'
        + f'[deadletter]\nurl = "{tmp / "dead"}"\n'
        + body
    )
    return path


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = [x for x in run.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, run.stderr
    return lines[0]


AGG = '[[aggregates]]\nname = "a"\ntable = "Tab"\ngroup_by = ["status"]\nmetrics = { n = "count" }\n'


@pytest.mark.parametrize(
    ("section", "names"),
    [
        ("[aws]\nendpoint_url = 'http://127.0.0.1:{port}'\n" + AGG, "DescribeTable Tab"),
        ("[aws]\nendpoint_url = 'http://127.0.0.1:{port}'\n[archive]\nbucket = 'arch'\n", "HeadBucket arch"),
        ("[search]\nurl = 'http://127.0.0.1:{port}'\nindex = 'orders'\n", "127.0.0.1"),
    ],
)
def test_an_unreachable_endpoint_is_retried_then_named_in_one_line(tmp_path: Path, section: str, names: str) -> None:
    port = closed_port()
    cfg = write(tmp_path, section.replace("{port}", str(port)))
    run = run_worker("local", "--config", str(cfg), "--fixtures", str(FIXTURE))
    line = one_line(run)
    assert line.startswith("worker: start-up: gave up after") and names in line and str(port) in line


def test_no_credentials_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no credentials: boto3 must not probe instance metadata
    cfg = write(tmp_path, f"[aws]\nendpoint_url = 'http://127.0.0.1:{closed_port()}'\n" + AGG)
    line = one_line(run_worker("local", "--config", str(cfg), "--fixtures", str(FIXTURE), env=env))
    assert "no AWS credentials" in line and "DescribeTable Tab" in line


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_corrupt_gzip_fixture_names_the_file(tmp_path: Path, damage: str) -> None:
    good = gzip.compress(FIXTURE.read_bytes())
    bad = tmp_path / "orders.jsonl.gz"
    bad.write_bytes(good[: len(good) // 2] if damage == "truncated" else good[:10] + b"\x00" * 50 + good[60:])
    run = run_worker("local", "--config", str(write(tmp_path, "")), "--fixtures", str(bad))
    line = one_line(run)
    assert str(bad) in line and "gzip" in line
    debug = run_worker("--debug", "local", "--config", str(write(tmp_path, "")), "--fixtures", str(bad))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_missing_table_or_bucket_stops_naming_it(moto_url: str) -> None:
    ddb = boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1")
    with pytest.raises(FatalError, match="'Missing' does not exist"):
        ensure_table(ddb, "Missing", create=False)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    with pytest.raises(FatalError, match="S3 bucket 'missing' does not exist"):
        ensure_bucket(s3, "missing", create=False)
    ensure_bucket(s3, "made", create=True)
    ensure_bucket(s3, "made", create=False)  # now it exists
