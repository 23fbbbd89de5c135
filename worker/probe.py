"""``check-config --probe``: the live resources and permissions, checked with the current credentials.

Each check is one :class:`Check` (ok or failed, with the reason). Nothing is
written: write permissions on DynamoDB tables are proven with a conditional
``UpdateItem`` whose condition cannot hold (``ConditionalCheckFailed`` means
the call was allowed); S3 with ``HeadBucket`` and ``ListObjectsV2`` (archive
writes are not probed: they would leave an object); OpenSearch with ``HEAD``
of the index. KCL's three tables may be missing before the first start (KCL
creates them): that is reported as ok, with what KCL then needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from worker.aws import error_code
from worker.config import Config


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok    ' if self.ok else 'FAILED'}  {self.name}: {self.detail}"


def _reason(exc: BaseException) -> str:
    code = error_code(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text


def run(cfg: Config, client: Callable[[str], Any], search: Callable[[], Any] | None) -> Iterator[Check]:
    """Every check for ``cfg``; ``client(service)`` gives boto3 clients, ``search()`` a search client
    (:class:`~worker.sinks.search.client.SearchClient`)."""
    ddb = client("dynamodb")
    yield from _stream(cfg, ddb, client("dynamodbstreams"))
    for table in sorted({a.table for a in cfg.aggregates}):
        yield _writable_table(ddb, table, f"aggregates table {table}")
    if cfg.archive is not None:
        yield _bucket(client("s3"), cfg.archive.bucket, cfg.archive.prefix, "archive bucket")
    if cfg.deadletter.url.startswith("s3://"):
        bucket, _, prefix = cfg.deadletter.url[len("s3://") :].partition("/")
        yield _bucket(client("s3"), bucket, prefix, "dead-letter bucket")
    if cfg.search is not None and search is not None:
        yield _index(cfg, search)
    from worker.leases import lease_table

    lease = lease_table(cfg)
    app = cfg.kcl.application_name
    yield _kcl_table(ddb, lease, "KCL lease table")
    yield _kcl_table(ddb, f"{app}-CoordinatorState", "KCL coordinator state table")
    yield _kcl_table(ddb, f"{app}-WorkerMetricStats", "KCL worker metrics table")


def _stream(cfg: Config, ddb: Any, streams: Any) -> Iterator[Check]:
    name = f"source table {cfg.worker.table}"
    try:
        desc = ddb.describe_table(TableName=cfg.worker.table)["Table"]
    except Exception as exc:
        yield Check(name, False, _reason(exc))
        return
    yield Check(name, True, f"{desc.get('TableStatus', '?')}")
    arn = cfg.kcl.stream_arn or desc.get("LatestStreamArn", "")
    spec = desc.get("StreamSpecification") or {}
    if not arn:
        yield Check("stream", False, "not enabled: aws dynamodb update-table --stream-specification ...")
        return
    try:
        sdesc = streams.describe_stream(StreamArn=arn, Limit=1)["StreamDescription"]
    except Exception as exc:
        yield Check("stream", False, f"{arn}: {_reason(exc)}")
        return
    view = sdesc.get("StreamViewType") or spec.get("StreamViewType", "")
    status = sdesc.get("StreamStatus", "?")
    if view != "NEW_AND_OLD_IMAGES":
        yield Check("stream", False, f"{arn}: view type {view or '?'}, NEW_AND_OLD_IMAGES is required")
    elif status not in ("ENABLED", "ENABLING"):
        yield Check("stream", False, f"{arn}: {status}")
    else:
        yield Check("stream", True, f"{arn}: {status}, {view}")


def _writable_table(ddb: Any, table: str, name: str) -> Check:
    try:
        desc = ddb.describe_table(TableName=table)["Table"]
    except Exception as exc:
        return Check(name, False, _reason(exc))
    types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}
    key = {}
    for k in desc.get("KeySchema", []):
        attr = k["AttributeName"]
        kind = types.get(attr, "S")
        key[attr] = {kind: {"S": "__worker_probe__", "N": "0", "B": b"\0"}[kind]}
    first = desc["KeySchema"][0]["AttributeName"]
    try:  # a condition that cannot hold on a key nobody uses: allowed calls fail the condition, nothing is written
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #p = :p",
            ConditionExpression="attribute_exists(#k) AND attribute_not_exists(#k)",
            ExpressionAttributeNames={"#p": "__worker_probe__", "#k": first},
            ExpressionAttributeValues={":p": {"N": "0"}},
        )
    except Exception as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return Check(name, True, f"{desc.get('TableStatus', '?')}, writable (conditional update allowed)")
        return Check(name, False, f"not writable: {_reason(exc)}")
    return Check(name, False, "a probe update was applied: the table accepted an impossible condition")


def _bucket(s3: Any, bucket: str, prefix: str, name: str) -> Check:
    try:
        s3.head_bucket(Bucket=bucket)
        s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:
        return Check(name, False, f"s3://{bucket}/{prefix}: {_reason(exc)}")
    return Check(name, True, f"s3://{bucket}/{prefix}: reachable, listable (writes not probed)")


def _index(cfg: Config, search: Callable[[], Any]) -> Check:
    assert cfg.search is not None
    index = cfg.search.index
    name = f"search index {index}"
    try:
        client = search()
        try:
            exists = client.index_exists(index)
        finally:
            client.close()
    except Exception as exc:  # the client's classified errors name the status or the failure
        return Check(name, False, _reason(exc))
    if exists:
        return Check(name, True, "exists")
    return Check(name, True, "missing: created from search.template at start (needs create-index permission)")


def _kcl_table(ddb: Any, table: str, name: str) -> Check:
    try:
        desc = ddb.describe_table(TableName=table)["Table"]
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return Check(f"{name} {table}", True, "missing: KCL creates it at first start (dynamodb:CreateTable)")
        return Check(f"{name} {table}", False, _reason(exc))
    return Check(f"{name} {table}", True, str(desc.get("TableStatus", "?")))
