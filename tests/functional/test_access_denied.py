"""Access denied, on moto's IAM mode: one clear line naming what was denied and where, a
non-zero exit, no traceback, nothing acknowledged.

moto authenticates and authorizes requests against the IAM policies created in it once
``INITIAL_NO_AUTH_ACTION_COUNT`` requests have been served unchecked (its documented IAM-like
access control). This module's own moto server serves exactly the three IAM calls that create
a user, its policy (everything allowed except ``s3:PutObject`` into one bucket and
``dynamodb:UpdateItem``) and its access key; every later request is checked. The worker then
runs with that user's keys: it may create its bucket and tables, read them, and nothing else.

moto answers a denied DynamoDB call with HTTP 403 and an XML body (botocore reads its code as
``403``); DynamoDB itself answers 400 ``AccessDeniedException`` (that shape is covered in
``tests/unit/test_aggregates_store.py``). Both stop the worker as access denied.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.worker_cli import run_worker
from worker.aws import ensure_bucket
from worker.config import AggregateSection
from worker.emulators import start_moto
from worker.pipeline import Pipeline, StopProcessing
from worker.records import RawRecord
from worker.shapes import build
from worker.sinks.aggregates.sink import AggregatesSink
from worker.sinks.aggregates.store import ensure_table
from worker.sinks.archive import ArchiveSink
from worker.testing import MemoryDeadLetters

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "config" / "fixtures" / "orders.jsonl"
DENIED_BUCKET = "denied-archive"
DENIED_TABLE = "DeniedStats"
SETUP_CALLS = 3  # CreateUser, PutUserPolicy, CreateAccessKey: then moto checks every request
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{DENIED_BUCKET}/*"},
        {"Effect": "Deny", "Action": "dynamodb:UpdateItem", "Resource": "*"},
    ],
}


@dataclass(frozen=True)
class Denied:
    url: str
    key_id: str
    secret: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=BotoConfig(retries={"total_max_attempts": 1}),
        )


@pytest.fixture(scope="module")
def denied() -> Iterator[Denied]:
    """A moto server in IAM mode and the keys of a user who may not write objects or rows."""
    server = start_moto(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)})
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            config=BotoConfig(retries={"total_max_attempts": 1}),
        )
        iam.create_user(UserName="worker")
        iam.put_user_policy(UserName="worker", PolicyName="no-writes", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        # From here on moto checks every request: keys it does not know are refused.
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").list_buckets()
        yield Denied(server.url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()


def run_local(tmp: Path, denied: Denied, body: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp / "cfg.toml"
    cfg.write_text(
        '[worker]\ntable = "Orders"\nregion = "us-east-1"\nlog_level = "error"\n'
        f'[aws]\nendpoint_url = "{denied.url}"\n[deadletter]\nurl = "{tmp / "dead"}"\n' + body
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=denied.key_id,
        AWS_SECRET_ACCESS_KEY=denied.secret,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"),
    )
    return run_worker("local", "--config", str(cfg), "--fixtures", str(FIXTURE), env=env, timeout=120)


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0, run.stdout
    assert "Traceback" not in run.stderr + run.stdout
    lines = [x for x in run.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, run.stderr
    print(lines[0])
    return lines[0]


def test_a_denied_s3_put_stops_worker_local_in_one_line_naming_the_bucket(tmp_path: Path, denied: Denied) -> None:
    run = run_local(tmp_path, denied, f'[archive]\nbucket = "{DENIED_BUCKET}"\n')
    line = one_line(run)
    assert "AccessDenied" in line and f"s3://{DENIED_BUCKET}/" in line and "put" in line, line
    # The bucket was created (allowed); nothing was written into it.
    assert denied.client("s3").list_objects_v2(Bucket=DENIED_BUCKET)["KeyCount"] == 0


def test_a_denied_update_item_stops_worker_local_in_one_line_naming_the_table(tmp_path: Path, denied: Denied) -> None:
    body = f'[[aggregates]]\nname = "by_status"\ntable = "{DENIED_TABLE}"\ngroup_by = ["status"]\n'
    run = run_local(tmp_path, denied, body + 'metrics = { orders = "count" }\n')
    line = one_line(run)
    assert "access denied" in line and f"UpdateItem {DENIED_TABLE}" in line, line
    assert denied.client("dynamodb").scan(TableName=DENIED_TABLE)["Count"] == 0


def records(n: int = 3) -> list[RawRecord]:
    shard = "shardId-00000001763700000000-aaaa0001"
    out = []
    for i in range(n):
        item = {"pk": f"o{i}", "status": "paid", "total": Decimal(i + 1)}
        seq = 49_000_000_000_000_000_000_000 + i
        out.append(RawRecord(build("INSERT", {"pk": item["pk"]}, new=item, sequence=seq), f"{shard}/{seq}", shard))
    return out


@pytest.mark.parametrize("sink", ["archive", "aggregates"])
def test_access_denied_is_not_retried_and_nothing_is_acknowledged(denied: Denied, sink: str) -> None:
    built: Any
    if sink == "archive":
        s3 = denied.client("s3")
        ensure_bucket(s3, DENIED_BUCKET, create=True)
        built = ArchiveSink(s3, DENIED_BUCKET, "changes/", table="Orders")
    else:
        ddb = denied.client("dynamodb")
        ensure_table(ddb, DENIED_TABLE, create=True)
        section = AggregateSection(name="n", table=DENIED_TABLE, group_by=["status"], metrics={"n": "count"})
        built = AggregatesSink(ddb, [section], concurrency=1)
    retried: list[str] = []
    pipeline = Pipeline([built], MemoryDeadLetters())
    pipeline.retry.on_retry = lambda what, n, exc, wait: retried.append(str(exc))
    try:
        with pytest.raises(StopProcessing, match=r"(?i)access ?denied") as stopped:
            pipeline.process(records())
        assert retried == [], "access denied is not worth a retry"
        assert "\n" not in str(stopped.value)
        assert pipeline.commit(force=True).sequences == {}  # nothing may be checkpointed
    finally:
        pipeline.close()
