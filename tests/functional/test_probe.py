"""`worker check-config --probe` against moto (server mode) and osmem-server, as a real process."""

import os
import subprocess
import sys
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]


def ddb_client(url):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")


def create(ddb, table, *, view=None, range_key=False):
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
    extra = {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": view}} if view else {}
    ddb.create_table(
        TableName=table, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST", **extra
    )


def probe(moto_url, osmem_url, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER")}
    env.update(
        dict(
            AWS_EC2_METADATA_DISABLED="true",
            AWS_REGION="us-east-1",
            WORKER__WORKER__TABLE="Orders",
            WORKER__AWS__ENDPOINT_URL=moto_url,
            WORKER__AGGREGATES__0__NAME="by_status",
            WORKER__AGGREGATES__0__TABLE="OrderStats",
            WORKER__AGGREGATES__0__GROUP_BY="status",
            WORKER__AGGREGATES__0__METRICS="{ n = 'count' }",
            WORKER__ARCHIVE__BUCKET="orders-archive",
            WORKER__DEADLETTER__URL="s3://orders-dead/letters/",
            WORKER__SEARCH__URL=osmem_url,
            WORKER__SEARCH__INDEX="orders",
        )
    )
    env.update(extra)
    run = subprocess.run(
        [sys.executable, "-m", "worker", "check-config", "--probe"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    lines = {}
    for line in run.stdout.splitlines():
        if line.startswith(("ok", "FAILED")):
            status, rest = line.split(maxsplit=1)
            name, _, detail = rest.partition(": ")
            lines[name] = (status, detail)
    return run, lines


def test_probe_reports_every_resource_ok(moto_url, osmem_url):
    ddb = ddb_client(moto_url)
    create(ddb, "Orders", view="NEW_AND_OLD_IMAGES")
    create(ddb, "OrderStats", range_key=True)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket="orders-archive")
    s3.create_bucket(Bucket="orders-dead")
    run, lines = probe(moto_url, osmem_url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(lines) == {
        "source table Orders",
        "stream",
        "aggregates table OrderStats",
        "archive bucket",
        "dead-letter bucket",
        "search index orders",
        "KCL lease table worker-Orders",
        "KCL coordinator state table worker-Orders-CoordinatorState",
        "KCL worker metrics table worker-Orders-WorkerMetricStats",
    }
    assert all(status == "ok" for status, _ in lines.values()), run.stdout
    assert "NEW_AND_OLD_IMAGES" in lines["stream"][1]
    assert "missing" in lines["search index orders"][1]
    assert "KCL creates it" in lines["KCL lease table worker-Orders"][1]
    # nothing was written by the probe
    assert ddb.scan(TableName="OrderStats")["Items"] == []
    assert run.stdout.rstrip().endswith("probe: all ok")


def test_probe_names_each_failure_and_exits_1(moto_url, osmem_url):
    ddb = ddb_client(moto_url)
    create(ddb, "Orders", view="NEW_IMAGE")  # wrong view type; no aggregates table, no buckets
    create(ddb, "worker-Orders")  # a lease table that exists
    run, lines = probe(moto_url, osmem_url)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert lines["source table Orders"][0] == "ok"
    assert lines["stream"][0] == "FAILED" and "view type NEW_IMAGE" in lines["stream"][1]
    assert lines["aggregates table OrderStats"][0] == "FAILED"
    assert "ResourceNotFoundException" in lines["aggregates table OrderStats"][1]
    assert lines["archive bucket"][0] == "FAILED" and "orders-archive" in lines["archive bucket"][1]
    assert lines["dead-letter bucket"][0] == "FAILED"
    assert lines["KCL lease table worker-Orders"] == ("ok", "ACTIVE")
    assert run.stdout.rstrip().endswith("probe: 4 failed")


def test_probe_reports_an_unreachable_search_endpoint(moto_url):
    from worker.emulators import free_port

    create(ddb_client(moto_url), "Orders", view="NEW_AND_OLD_IMAGES")
    run, lines = probe(moto_url, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert run.returncode == 1 and "Traceback" not in run.stderr
    status, detail = lines["search index orders"]
    assert status == "FAILED" and "onnection" in detail
