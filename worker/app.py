"""Composition root: builds sinks, dead letters and the pipeline from configuration.

Every source (KCL child, fixture files, archive replay, dev poller) gets its
pipeline from :func:`build_pipeline`, so production, replays and local runs
share one code path. Sinks are built by their module's ``create(cfg, provision=...)``;
``provision=True`` (local runs, tests) creates missing tables, buckets and
indexes on the target; production expects them to exist (except the search
index, which is always created from its template when missing).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from worker.config import Config
from worker.errors import ConfigError
from worker.pipeline import Pipeline
from worker.retry import RetryPolicy
from worker.sinks import DeadLetters, Sink

SINK_NAMES = ("aggregates", "search", "archive")


def configured_sinks(cfg: Config) -> list[str]:
    names = []
    if cfg.aggregates:
        names.append("aggregates")
    if cfg.search is not None:
        names.append("search")
    if cfg.archive is not None:
        names.append("archive")
    return names


def build_sinks(cfg: Config, *, only: Collection[str] | None = None, provision: bool = False) -> list[Sink]:
    """The configured sinks (optionally only those named), in a fixed order."""
    available = configured_sinks(cfg)
    if only is not None:
        for name in only:
            if name not in available:
                known = ", ".join(available) or "none"
                raise ConfigError("--sinks", f"{name!r} is not configured (configured: {known})")
    wanted = [n for n in available if only is None or n in only]
    sinks: list[Sink] = []
    for name in wanted:
        if name == "aggregates":
            from worker.sinks import aggregates

            sinks.append(aggregates.create(cfg, provision=provision))
        elif name == "search":
            from worker.sinks import search

            sinks.append(search.create(cfg, provision=provision))
        elif name == "archive":
            from worker.sinks import archive

            sinks.append(archive.create(cfg, provision=provision))
    return sinks


def build_deadletters(cfg: Config, *, provision: bool = False) -> DeadLetters:
    from worker.sinks.deadletter import LocalDeadLetters, S3DeadLetters, split_s3_url

    url = cfg.deadletter.url
    if url.startswith("s3://"):
        from worker.aws import client

        bucket, prefix = split_s3_url(url)
        s3 = client(cfg, "s3")
        if provision:
            ensure_bucket(s3, bucket)
        return S3DeadLetters(s3, bucket, prefix)
    path = url[len("file://") :] if url.startswith("file://") else url
    return LocalDeadLetters(cfg.resolve(path) if not url.startswith("file:///") else path)


def build_pipeline(
    cfg: Config,
    *,
    sinks: list[Sink] | None = None,
    deadletters: DeadLetters | None = None,
    only: Collection[str] | None = None,
    provision: bool = False,
    retry: RetryPolicy | None = None,
    log: Any = None,
) -> Pipeline:
    retry = retry or retry_policy(cfg)
    # Start-up (tables, bucket, index checks) retries like a flush: an endpoint that is
    # briefly unreachable at start is waited for, within the same time budget.
    if sinks is None:
        sinks = retry.call(lambda: build_sinks(cfg, only=only, provision=provision), "start-up")
    if deadletters is None:
        deadletters = retry.call(lambda: build_deadletters(cfg, provision=provision), "start-up: dead letters")
    return Pipeline(sinks, deadletters, retry=retry, max_batch_records=cfg.pipeline.max_batch_records, log=log)


def retry_policy(cfg: Config) -> RetryPolicy:
    """The one failure budget of ``[pipeline]``: backoff within ``max_outage_seconds``."""
    p = cfg.pipeline
    return RetryPolicy(
        attempts=p.retry_attempts,
        base=p.retry_base_seconds,
        cap=p.retry_max_seconds,
        max_outage_seconds=p.max_outage_seconds,
    )


def ensure_bucket(s3: Any, bucket: str, *, create: bool = True) -> None:
    """Check that ``bucket`` exists and is ours to use; create it if missing when ``create``
    (local runs and tests). Unreachable endpoints retry; missing, forbidden, no credentials stop."""
    from botocore.exceptions import BotoCoreError, ClientError

    from worker.errors import FatalError
    from worker.sources.archive import classify, error_code

    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        code = error_code(exc)
        if code in ("403", "AccessDenied"):
            raise FatalError(f"S3 bucket {bucket!r}: access denied (check the IAM policy)") from exc
        if code not in ("404", "NoSuchBucket"):
            raise classify(exc, f"HeadBucket {bucket}") from exc
        if not create:
            raise FatalError(f"S3 bucket {bucket!r} does not exist") from exc
    except BotoCoreError as exc:
        raise classify(exc, f"HeadBucket {bucket}") from exc
    try:
        s3.create_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise classify(exc, f"CreateBucket {bucket}") from exc
