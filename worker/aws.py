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
        retries={"mode": "standard", "max_attempts": 3},
        # Account-scoped DynamoDB endpoints need an account id moto does not give.
        account_id_endpoint_mode="disabled",
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=16,
    )
    kwargs: dict[str, Any] = {"config": boto_cfg}
    if cfg.worker.region:  # else boto3's own chain (AWS_REGION, AWS_DEFAULT_REGION, profile)
        kwargs["region_name"] = cfg.worker.region
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    kwargs.update(overrides)
    session: Any = boto3.session.Session()  # untyped on purpose: `service` is dynamic
    return session.client(service, **kwargs)
