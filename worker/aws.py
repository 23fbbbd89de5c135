"""AWS in one place: boto3 clients from configuration, error codes and their actions, small helpers.

Clients are created by callers and injected (no module-level clients). Every
AWS error the worker meets is classified here, by action (see
:mod:`worker.errors`): :func:`classify_s3` and :func:`classify_dynamodb`
turn a botocore exception into a :class:`~worker.errors.RetryableError` or a
:class:`~worker.errors.FatalError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from worker.errors import FatalError, RetryableError, WorkerError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_s3 import S3Client

    from worker.config import Config

__all__ = [
    "DYNAMODB_RETRYABLE_CODES",
    "S3_FATAL_CODES",
    "classify_dynamodb",
    "classify_s3",
    "client",
    "ensure_bucket",
    "error_code",
    "split_s3_url",
    "stream_arn",
]

S3_FATAL_CODES = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)
DYNAMODB_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "LimitExceededException",
        "TransactionInProgressException",
    }
)


@overload
def client(cfg: Config, service: Literal["s3"], **overrides: Any) -> S3Client: ...


@overload
def client(cfg: Config, service: Literal["dynamodb"], **overrides: Any) -> DynamoDBClient: ...


@overload
def client(cfg: Config, service: Literal["dynamodbstreams"], **overrides: Any) -> DynamoDBStreamsClient: ...


def client(cfg: Config, service: str, **overrides: Any) -> Any:
    """A boto3 client for ``service`` honouring ``[aws]`` endpoints and ``worker.region``."""
    import boto3
    from botocore.config import Config as BotoConfig

    endpoint = cfg.aws.endpoint(service)
    boto_cfg = BotoConfig(
        retries={"mode": "standard", "max_attempts": 3},
        # Account-scoped DynamoDB endpoints need an account id moto does not give.
        account_id_endpoint_mode="disabled",
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=16,
    )
    kwargs: dict[str, Any] = {"region_name": cfg.worker.region, "config": boto_cfg}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    kwargs.update(overrides)
    session: Any = boto3.session.Session()  # untyped on purpose: `service` is dynamic
    return session.client(service, **kwargs)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def classify_s3(exc: Exception, what: str) -> WorkerError:
    """An S3 error as the worker's error: missing bucket or no permission stops, the rest retries."""
    code = error_code(exc)
    if code in S3_FATAL_CODES:
        return FatalError(f"{what}: {code}: {exc}")
    return RetryableError(f"{what}: {exc}")


def classify_dynamodb(exc: Exception, what: str) -> Exception:
    """The worker error for a failed DynamoDB call: retry transient ones, stop on the rest.

    Exceptions that are not botocore's are returned as they are (they stop the worker).
    """
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in DYNAMODB_RETRYABLE_CODES or status >= 500:
            return RetryableError(f"{what}: {code or status}: {exc}")
        if code == "ResourceNotFoundException":
            return FatalError(f"{what}: table not found (create it, or run locally with provisioning): {exc}")
        return FatalError(f"{what}: {code}: {exc}")
    if isinstance(exc, ConnectionError | HTTPClientError):
        return RetryableError(f"{what}: connection failed: {exc}")
    if isinstance(exc, BotoCoreError):
        return FatalError(f"{what}: {exc}")
    return exc


def ensure_bucket(s3: S3Client, bucket: str) -> None:
    """Create ``bucket`` if missing (local runs and tests only)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``); ``ValueError`` if not an s3:// URL."""
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def stream_arn(dynamodb: DynamoDBClient, table: str) -> str:
    """The latest stream ARN of ``table`` (DescribeTable); stops when the table has no stream."""
    desc = dynamodb.describe_table(TableName=table)["Table"]
    arn = desc.get("LatestStreamArn")
    spec: Mapping[str, Any] = desc.get("StreamSpecification") or {}
    if not arn or not spec.get("StreamEnabled", True):
        raise FatalError(f"table {table!r} has no stream enabled")
    return str(arn)
