"""AWS in one place: boto3 clients from configuration, error codes and their actions, small helpers.

Clients come from botocore's session directly: a boto3 client *is* a botocore
client, and boto3's own session adds only its resource layer, s3transfer's
managed transfers and their imports (about a tenth of a shard process's import
time), none of which the worker uses. The clients are typed with the same
mypy-boto3 stubs.

Clients are created by callers and injected (no module-level clients). Every
AWS error the worker meets is classified here, by action (see
:mod:`worker.errors`): :func:`classify_s3` and :func:`classify_dynamodb`
turn a botocore exception into a :class:`~worker.errors.RetryableError` or a
:class:`~worker.errors.FatalError`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from worker.errors import FatalError, RetryableError, WorkerError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_s3 import S3Client

    from worker.config import Config

__all__ = [
    "DYNAMODB_ACCESS_DENIED_CODES",
    "DYNAMODB_RETRYABLE_CODES",
    "S3_FATAL_CODES",
    "classify_dynamodb",
    "classify_s3",
    "client",
    "credentials",
    "ensure_bucket",
    "error_code",
    "split_s3_url",
    "stream_arn",
]

S3_FATAL_CODES = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)
# DynamoDB answers 400 AccessDeniedException; a 403 (an endpoint policy, a proxy, moto's IAM
# mode, which also says AccessDenied) means the same: retrying cannot help.
DYNAMODB_ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
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
        "CRC32CheckFailed",  # an answer damaged on the way (checked by worker.sinks.aggregates.wire)
    }
)


@overload
def client(cfg: Config, service: Literal["s3"], **overrides: Any) -> S3Client: ...


@overload
def client(cfg: Config, service: Literal["dynamodb"], **overrides: Any) -> DynamoDBClient: ...


@overload
def client(cfg: Config, service: Literal["dynamodbstreams"], **overrides: Any) -> DynamoDBStreamsClient: ...


def client(cfg: Config, service: str, **overrides: Any) -> Any:
    """A boto3 (botocore) client for ``service`` honouring ``[aws]`` endpoints and ``worker.region``."""
    from botocore.config import Config as BotoConfig

    endpoint = cfg.aws.endpoint(service)
    boto_cfg = BotoConfig(
        # One try per call: the pipeline's RetryPolicy retries within its time budget
        # (pipeline.max_outage_seconds), so the two layers never multiply.
        retries={"mode": "standard", "total_max_attempts": 1},
        # Account-scoped DynamoDB endpoints need an account id moto does not give.
        account_id_endpoint_mode="disabled",
        connect_timeout=cfg.aws.connect_timeout_seconds,
        read_timeout=cfg.aws.read_timeout_seconds,
        max_pool_connections=16,
    )
    kwargs: dict[str, Any] = {"config": boto_cfg}
    if cfg.worker.region:  # else boto3's own chain (AWS_REGION, AWS_DEFAULT_REGION, profile)
        kwargs["region_name"] = cfg.worker.region
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    kwargs.update(overrides)
    with _SESSION_LOCK:  # a botocore session is not safe for concurrent client creation
        return _session(*(os.environ.get(name) for name in _CREDENTIAL_ENV)).create_client(service, **kwargs)


def credentials() -> Any:
    """The default credential chain's credentials (botocore ``Credentials``), or None when there are none:
    the same session, and so the same resolved identity, as :func:`client`'s."""
    with _SESSION_LOCK:
        return _session(*(os.environ.get(name) for name in _CREDENTIAL_ENV)).get_credentials()


# The environment a session resolves credentials and settings from once: a session per
# distinct value (tests and tools may switch identities inside one process).
_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_SESSION_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _session(*environment: str | None) -> Any:
    """One botocore session per process (per credential environment): service models and
    endpoint rules are loaded once and shared by every client, where a session per client
    loads them again (about 10 MiB each, measured with DynamoDB and two S3 clients)."""
    from botocore.session import Session

    return Session()  # untyped on purpose: `service` is dynamic


def retry_after(exc: BaseException) -> float | None:
    """The ``Retry-After`` header (seconds) of a botocore error's response, if the service sent one."""
    response = getattr(exc, "response", None)
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) if isinstance(response, dict) else {}
    value = headers.get("retry-after") if isinstance(headers, dict) else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def missing_credentials(exc: BaseException) -> bool:
    """True for botocore's "no credentials" errors: a configuration problem, never retried."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return isinstance(exc, NoCredentialsError | PartialCredentialsError)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def classify_s3(exc: Exception, what: str) -> WorkerError:
    """An S3 error as the worker's error: missing bucket or no permission stops, the rest retries."""
    if missing_credentials(exc):
        return FatalError(f"{what}: no AWS credentials ({exc})")
    code = error_code(exc)
    if code in S3_FATAL_CODES:
        return FatalError(f"{what}: {code}: {exc}")
    return RetryableError(f"{what}: {exc}", retry_after=retry_after(exc))


def classify_dynamodb(exc: Exception, what: str) -> Exception:
    """The worker error for a failed DynamoDB call: retry transient ones, stop on the rest.

    Exceptions that are not botocore's are returned as they are (they stop the worker).
    """
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in DYNAMODB_RETRYABLE_CODES or status >= 500:
            return RetryableError(f"{what}: {code or status}: {exc}", retry_after=retry_after(exc))
        if code in DYNAMODB_ACCESS_DENIED_CODES or status == 403:
            return FatalError(f"{what}: access denied (check the IAM policy): {_one_line(exc)}")
        if code == "ResourceNotFoundException":
            return FatalError(f"{what}: table not found (create it, or run locally with provisioning): {exc}")
        return FatalError(f"{what}: {code}: {_one_line(exc)}")
    if isinstance(exc, ConnectionError | HTTPClientError):
        return RetryableError(f"{what}: connection failed: {exc}")
    if missing_credentials(exc):
        return FatalError(f"{what}: no AWS credentials ({exc})")
    if isinstance(exc, BotoCoreError):
        return FatalError(f"{what}: {exc}")
    return exc


def _one_line(exc: BaseException) -> str:
    """The error's text on one line (a service may answer with a multi-line body)."""
    return " ".join(str(exc).split())


def ensure_bucket(s3: S3Client, bucket: str, *, create: bool = True) -> None:
    """Check that ``bucket`` exists and is ours to use; create it if missing when ``create``
    (local runs and tests). Unreachable endpoints retry; missing, forbidden, no credentials stop."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        code = error_code(exc)
        if code in ("403", "AccessDenied"):
            raise FatalError(f"S3 bucket {bucket!r}: access denied (check the IAM policy)") from exc
        if code not in ("404", "NoSuchBucket"):
            raise classify_s3(exc, f"HeadBucket {bucket}") from exc
        if not create:
            raise FatalError(f"S3 bucket {bucket!r} does not exist") from exc
    except BotoCoreError as exc:
        raise classify_s3(exc, f"HeadBucket {bucket}") from exc
    try:
        s3.create_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise classify_s3(exc, f"CreateBucket {bucket}") from exc


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
