"""`worker checkpoints show|reset` against a KCL 3 lease table on moto.

The lease table is created the way KCL 3.4.3 creates it (DynamoDBLeaseRefresher:
hash key `leaseKey` S, PAY_PER_REQUEST, then UpdateTable adding the GSI
`LeaseOwnerToLeaseKeyIndex` on leaseOwner/leaseKey, KEYS_ONLY) and holds items
as DynamoDBLeaseSerializer writes them. The source table's stream is moto's
(one shard). A live KCL worker is played by FakeKclWorker: it renews its lease
the way KCL does (UpdateItem conditional on the counter it last saw).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from worker import leases
from worker.errors import ConfigError, FatalError

APP = "orders-worker"


def ddb_client(moto_url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1")


def create_lease_table(ddb: Any, name: str = APP) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "leaseOwner", "AttributeType": "S"},
            {"AttributeName": "leaseKey", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "LeaseOwnerToLeaseKeyIndex",
                    "KeySchema": [
                        {"AttributeName": "leaseOwner", "KeyType": "HASH"},
                        {"AttributeName": "leaseKey", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            }
        ],
    )


def lease_item(shard: str, checkpoint: str, *, owner: str | None, counter: int, **extra: Any) -> dict[str, Any]:
    """A lease as DynamoDBLeaseSerializer.toDynamoRecord writes it (KCL 3.4.3)."""
    item: dict[str, Any] = {
        "leaseKey": {"S": shard},
        "leaseCounter": {"N": str(counter)},
        "ownerSwitchesSinceCheckpoint": {"N": "1"},
        "checkpoint": {"S": checkpoint},
        "checkpointSubSequenceNumber": {"N": "0"},
        "startingHashKey": {"S": "0"},
        "endingHashKey": {"S": "1"},
        "throughputKBps": {"N": "0.5"},
    }
    if owner:
        item["leaseOwner"] = {"S": owner}
    item.update(extra)
    return item


@pytest.fixture
def stream(moto_url: str) -> dict[str, Any]:
    """The source table with four changes in its stream; the lease table with two leases."""
    ddb = ddb_client(moto_url)
    ddb.create_table(
        TableName="Orders",
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    for i in range(4):
        ddb.put_item(TableName="Orders", Item={"order_id": {"S": f"o-{i}"}, "total": {"N": str(i)}})
    arn = ddb.describe_table(TableName="Orders")["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams", endpoint_url=moto_url, region_name="us-east-1")
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=it["ShardIterator"])["Records"]
    create_lease_table(ddb)
    sequences = [r["dynamodb"]["SequenceNumber"] for r in records]
    ddb.put_item(TableName=APP, Item=lease_item(shard["ShardId"], sequences[1], owner="worker-a", counter=17))
    ddb.put_item(
        TableName=APP,
        Item=lease_item(
            "shardId-00000001000000000000-parent0",
            "SHARD_END",
            owner=None,
            counter=40,
            childShardIds={"SS": [shard["ShardId"]]},
        ),
    )
    return {"arn": arn, "shard": shard["ShardId"], "sequences": sequences, "records": records, "ddb": ddb}


@pytest.fixture
def cfg_path(tmp_path: Path, moto_url: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        f'[worker]\ntable = "Orders"\nlog_format = "json"\n[aws]\nendpoint_url = "{moto_url}"\n'
        f'[kcl]\napplication_name = "{APP}"\n'
    )
    return path


def cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "checkpoints", "--config", str(cfg_path), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lease(ddb: Any, shard: str) -> dict[str, Any]:
    return dict(ddb.get_item(TableName=APP, Key={"leaseKey": {"S": shard}}, ConsistentRead=True)["Item"])


class FakeKclWorker:
    """Renews one lease like KCL's lease renewer: ADD leaseCounter 1, conditional on the counter it holds."""

    def __init__(self, ddb: Any, shard: str, owner: str, counter: int, every: float = 0.1) -> None:
        self.ddb, self.shard, self.owner, self.counter, self.every = ddb, shard, owner, counter, every
        self.renewals = 0
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeKclWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.ddb.update_item(
                    TableName=APP,
                    Key={"leaseKey": {"S": self.shard}},
                    UpdateExpression="ADD leaseCounter :one",
                    ConditionExpression="leaseCounter = :held AND leaseOwner = :me",
                    ExpressionAttributeValues={
                        ":one": {"N": "1"},
                        ":held": {"N": str(self.counter)},
                        ":me": {"S": self.owner},
                    },
                )
            except self.ddb.exceptions.ConditionalCheckFailedException:
                self.lost.set()  # KCL drops the lease: someone else changed it
                return
            self.counter += 1
            self.renewals += 1


# -- show -----------------------------------------------------------------------------------------


def test_show_lists_shard_owner_checkpoint_and_lag(cfg_path: Path, stream: dict[str, Any]) -> None:
    run = cli(cfg_path, "show", "--json")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    parent, child = rows  # sorted by shard id
    assert parent["shard"] == "shardId-00000001000000000000-parent0"
    assert (parent["owner"], parent["checkpoint"], parent["lag_seconds"]) == (None, "SHARD_END", 0.0)
    assert child["shard"] == stream["shard"] and child["owner"] == "worker-a"
    assert child["checkpoint"] == stream["sequences"][1] and child["lease_counter"] == 17
    # The oldest unprocessed record is the third one: its age now.
    created = stream["records"][2]["dynamodb"]["ApproximateCreationDateTime"]
    age = (dt.datetime.now(dt.UTC) - created).total_seconds()
    assert child["lag_seconds"] == pytest.approx(age, abs=30)

    table = cli(cfg_path, "show", "--no-lag")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["SHARD", "OWNER", "CHECKPOINT", "LAG"]
    assert lines[1].split()[:3] == [stream["shard"], "worker-a", stream["sequences"][1]]


def test_lag_is_zero_when_caught_up_and_measured_from_the_trim_horizon(stream: dict[str, Any], moto_url: str) -> None:
    streams = boto3.client("dynamodbstreams", endpoint_url=moto_url, region_name="us-east-1")
    (_, current) = leases.read_leases(stream["ddb"], APP)
    now = dt.datetime.now(dt.UTC)
    caught_up = leases.Lease(**{**current.__dict__, "checkpoint": stream["sequences"][-1]})
    assert leases.lag(streams, stream["arn"], caught_up, now) == leases.Lag(0.0)
    horizon = leases.Lease(**{**current.__dict__, "checkpoint": "TRIM_HORIZON"})
    first = stream["records"][0]["dynamodb"]["ApproximateCreationDateTime"]
    assert leases.lag(streams, stream["arn"], horizon, now).seconds == pytest.approx(
        (now - first).total_seconds(), abs=1
    )
    latest = leases.Lease(**{**current.__dict__, "checkpoint": "LATEST"})
    assert leases.lag(streams, stream["arn"], latest, now) == leases.Lag(None, "at LATEST")


def test_show_without_a_lease_table_says_so(cfg_path: Path, moto_url: str) -> None:
    run = cli(cfg_path, "show")
    assert run.returncode == 1
    assert f"lease table {APP!r} not found" in run.stderr


# -- reset ----------------------------------------------------------------------------------------


def test_reset_refuses_while_a_worker_renews_its_lease(cfg_path: Path, stream: dict[str, Any]) -> None:
    ddb = stream["ddb"]
    with FakeKclWorker(ddb, stream["shard"], "worker-a", 17) as worker:
        run = cli(cfg_path, "reset", "--to", "trim-horizon", "--wait", "1")
        assert not worker.lost.is_set()
    assert run.returncode == 1, run.stderr
    assert "refusing to reset" in run.stderr and stream["shard"] in run.stderr and "worker-a" in run.stderr
    assert worker.renewals > 0
    assert lease(ddb, stream["shard"])["checkpoint"]["S"] == stream["sequences"][1]  # untouched
    assert lease(ddb, "shardId-00000001000000000000-parent0")["checkpoint"]["S"] == "SHARD_END"


def test_reset_rewrites_leases_whose_owner_stopped_renewing(cfg_path: Path, stream: dict[str, Any]) -> None:
    ddb = stream["ddb"]
    ddb.update_item(
        TableName=APP,
        Key={"leaseKey": {"S": stream["shard"]}},
        UpdateExpression="SET pendingCheckpoint = :p, pendingCheckpointSubSequenceNumber = :z, checkpointOwner = :o",
        ExpressionAttributeValues={":p": {"S": stream["sequences"][2]}, ":z": {"N": "0"}, ":o": {"S": "worker-a"}},
    )
    run = cli(cfg_path, "reset", "--to", "trim-horizon", "--wait", "0.3")
    assert run.returncode == 0, run.stderr
    assert f"{stream['shard']}: {stream['sequences'][1]} -> TRIM_HORIZON" in run.stdout
    assert "2 checkpoint(s) reset" in run.stdout
    item = lease(ddb, stream["shard"])
    assert item["checkpoint"] == {"S": "TRIM_HORIZON"} and item["checkpointSubSequenceNumber"] == {"N": "0"}
    assert item["leaseCounter"] == {"N": "18"} and item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
    for gone in ("leaseOwner", "checkpointOwner", "pendingCheckpoint", "pendingCheckpointSubSequenceNumber"):
        assert gone not in item
    assert item["throughputKBps"] == {"N": "0.5"}  # everything else is kept
    parent = lease(ddb, "shardId-00000001000000000000-parent0")
    assert parent["checkpoint"] == {"S": "TRIM_HORIZON"} and parent["childShardIds"] == {"SS": [stream["shard"]]}


def test_forced_reset_takes_the_lease_from_a_live_worker(cfg_path: Path, stream: dict[str, Any]) -> None:
    ddb = stream["ddb"]
    with FakeKclWorker(ddb, stream["shard"], "worker-a", 17) as worker:
        run = cli(cfg_path, "reset", "--to", "latest", "--shard", stream["shard"], "--force", "--wait", "0.5")
        assert worker.lost.wait(10), "the worker should fail its next renewal and drop the lease"
    assert run.returncode == 0, run.stderr
    assert "(was held: forced)" in run.stdout
    item = lease(ddb, stream["shard"])
    assert item["checkpoint"] == {"S": "LATEST"} and "leaseOwner" not in item
    assert lease(ddb, "shardId-00000001000000000000-parent0")["checkpoint"]["S"] == "SHARD_END"  # not selected


def test_reset_to_a_sequence_number_needs_exactly_one_shard(cfg_path: Path, stream: dict[str, Any]) -> None:
    seq = stream["sequences"][0]
    run = cli(cfg_path, "reset", "--to", seq, "--wait", "0")
    assert run.returncode == 2 and "exactly one --shard" in run.stderr
    run = cli(cfg_path, "reset", "--to", seq, "--shard", "shardId-nope", "--wait", "0")
    assert run.returncode == 2 and "no lease for shardId-nope" in run.stderr
    run = cli(cfg_path, "reset", "--to", "yesterday", "--wait", "0")
    assert run.returncode == 2 and "--to" in run.stderr
    run = cli(cfg_path, "reset", "--to", seq, "--shard", stream["shard"], "--wait", "0.2")
    assert run.returncode == 0, run.stderr
    assert lease(stream["ddb"], stream["shard"])["checkpoint"] == {"S": seq}


def test_a_lease_changed_between_check_and_write_is_not_overwritten(stream: dict[str, Any]) -> None:
    ddb = stream["ddb"]
    (_, current) = leases.read_leases(ddb, APP)
    stale = leases.Lease(**{**current.__dict__, "counter": current.counter - 1})
    with pytest.raises(FatalError, match="changed while resetting"):
        leases.rewrite(ddb, APP, stale, "TRIM_HORIZON")
    assert lease(ddb, stream["shard"])["checkpoint"]["S"] == stream["sequences"][1]
    with pytest.raises(ConfigError):
        leases.reset(ddb, APP, "latest", shards=["shardId-nope"])
