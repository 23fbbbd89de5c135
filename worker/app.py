"""Composition root: builds sinks, dead letters and the pipeline from configuration.

Every source (KCL child, fixture files, archive replay, dev poller) gets its
pipeline from :func:`build_pipeline`, so production, replays and local runs
share one code path. Sinks are built through the registry (:mod:`worker.sinks.registry`), each by its
module's ``create(cfg, provision=...)``;
``provision=True`` (local runs, tests) creates missing tables, buckets and
indexes on the target; production expects them to exist (except the search
index, which is always created from its template when missing).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from worker.config import Config
from worker.pipeline import Pipeline
from worker.retry import RetryPolicy
from worker.sinks import DeadLetters, Sink, registry


def configured_sinks(cfg: Config) -> list[str]:
    """The names of the configured sinks, in registry order (:mod:`worker.sinks.registry`)."""
    return registry.configured(cfg)


def build_sinks(cfg: Config, *, only: Collection[str] | None = None, provision: bool = False) -> list[Sink]:
    """The configured sinks (optionally only those named), in registry order."""
    return registry.build(cfg, only=only, provision=provision)


def build_deadletters(cfg: Config, *, provision: bool = False) -> DeadLetters:
    from worker.deadletters import LocalDeadLetters, S3DeadLetters

    url = cfg.deadletter.url
    if url.startswith("s3://"):
        from worker.aws import client, ensure_bucket, split_s3_url

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
    p = cfg.pipeline
    return Pipeline(
        sinks,
        deadletters,
        retry=retry,
        max_batch_records=p.max_batch_records,
        flush_interval=p.flush_interval,
        commit_interval=p.commit_interval,
        log=log,
    )


def retry_policy(cfg: Config) -> RetryPolicy:
    """The one failure budget of ``[pipeline]``: backoff within ``max_outage_seconds``."""
    p = cfg.pipeline
    return RetryPolicy(
        attempts=p.retry_attempts,
        base=p.retry_base_seconds,
        cap=p.retry_max_seconds,
        max_outage_seconds=p.max_outage_seconds,
    )
