"""boto3 clients built from configuration; created by callers and injected (no module-level clients)."""

from __future__ import annotations

from typing import Any

from worker.config import Config


def client(cfg: Config, service: str, **overrides: Any) -> Any:
    """A boto3 client for ``service`` honouring ``[aws]`` endpoints and ``worker.region``."""
    import boto3
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
    kwargs: dict[str, Any] = {"region_name": cfg.worker.region, "config": boto_cfg}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    kwargs.update(overrides)
    session: Any = boto3.session.Session()  # untyped on purpose: `service` is dynamic
    return session.client(service, **kwargs)


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
