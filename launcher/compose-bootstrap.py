"""One-shot setup for launcher/docker-compose.yml: the source table (with its stream) and buckets.

Runs inside the worker image (boto3 is a dependency). Idempotent. Configuration by environment:
BOOTSTRAP_TABLE (default Orders), BOOTSTRAP_BUCKETS (comma separated), DYNAMODB_ENDPOINT,
S3_ENDPOINT, AWS_REGION; with WORKER_CONFIG (and WORKER__AWS__ENDPOINT_URL) also the aggregates
tables of that configuration.
"""

from __future__ import annotations

import os
import sys
import time

import boto3


def main() -> int:
    region = os.environ.get("AWS_REGION", "us-east-1")
    table = os.environ.get("BOOTSTRAP_TABLE", "Orders")
    ddb = boto3.client("dynamodb", region_name=region, endpoint_url=os.environ["DYNAMODB_ENDPOINT"])
    for attempt in range(60):  # the emulator may still be starting
        try:
            names = ddb.list_tables()["TableNames"]
            break
        except Exception as exc:  # noqa: BLE001 - any connection error means "not yet"
            if attempt == 59:
                raise
            print(f"waiting for DynamoDB: {exc}", file=sys.stderr)
            time.sleep(1)
    if table not in names:
        # Same shape as worker.examples.create_table (the bundled Orders workload).
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        ddb.get_waiter("table_exists").wait(TableName=table)
    arn = ddb.describe_table(TableName=table)["Table"].get("LatestStreamArn")
    print(f"table {table}: stream {arn}", file=sys.stderr)

    buckets = [b.strip() for b in os.environ.get("BOOTSTRAP_BUCKETS", "").split(",") if b.strip()]
    if buckets:
        s3 = boto3.client("s3", region_name=region, endpoint_url=os.environ["S3_ENDPOINT"])
        for bucket in buckets:
            try:
                s3.head_bucket(Bucket=bucket)
            except Exception:  # noqa: BLE001 - missing (or not yet visible): create
                s3.create_bucket(Bucket=bucket)
            print(f"bucket {bucket}: ready", file=sys.stderr)

    # The aggregates tables of the worker's configuration (WORKER_CONFIG, with its WORKER__* overrides).
    if os.environ.get("WORKER_CONFIG"):
        from worker import config
        from worker.app import build_sinks

        for sink in build_sinks(config.load(os.environ["WORKER_CONFIG"]), only=["aggregates"], provision=True):
            sink.close()
        print("aggregates tables: ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
