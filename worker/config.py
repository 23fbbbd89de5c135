"""Configuration: TOML files, overridden by environment variables, validated at start-up.

Precedence (highest first): ``WORKER__SECTION__KEY`` environment variables, the
TOML file, the defaults below. An environment value is converted by the type of
its field (see :mod:`worker.config_convert`): ``WORKER__SEARCH__PASSWORD=12345``
is a string, ``WORKER__PIPELINE__RETRY_ATTEMPTS=5`` an integer. Arrays of tables
take an index: ``WORKER__AGGREGATES__0__TABLE``. A file is optional: the
environment alone is a complete configuration.

Every error is a :class:`~worker.errors.ConfigError` naming the dotted key
(``search.bulk_max_bytes``) and the reason; unknown keys are errors too, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from worker.config_convert import ENV_PREFIX, apply_env, build
from worker.errors import ConfigError

__all__ = ["ENV_PREFIX", "Config", "load", "require_runtime"]


# -- sections ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSection:
    table: str = ""  # the source table (its stream, archive partitions); required to run
    region: str = ""  # default: AWS_REGION, else AWS_DEFAULT_REGION; required to run
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    data_dir: str = ".local"  # writable state (replay progress); relative to the working directory

    def validate(self, prefix: str) -> None:
        _check_table(self.table, f"{prefix}.table", required=False)
        if self.region:
            _check_region(self.region, f"{prefix}.region")
        if not self.data_dir:
            raise ConfigError(f"{prefix}.data_dir", "must not be empty")


@dataclass(frozen=True)
class AwsSection:
    """Endpoints for emulators; empty means the real AWS endpoint."""

    endpoint_url: str = ""
    dynamodb_endpoint_url: str = ""
    streams_endpoint_url: str = ""
    s3_endpoint_url: str = ""
    connect_timeout_seconds: float = 5.0  # per call; botocore does not retry (the pipeline's budget does)
    read_timeout_seconds: float = 30.0

    def endpoint(self, service: str) -> str | None:
        specific = {
            "dynamodb": self.dynamodb_endpoint_url,
            "dynamodbstreams": self.streams_endpoint_url,
            "s3": self.s3_endpoint_url,
        }.get(service, "")
        return specific or self.endpoint_url or None

    def validate(self, prefix: str) -> None:
        for key in ("connect_timeout_seconds", "read_timeout_seconds"):
            _bounded(getattr(self, key), f"{prefix}.{key}", MAX_CALL_TIMEOUT_SECONDS)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value and isinstance(value, str):
                _check_http_url(value, f"{prefix}.{f.name}")


@dataclass(frozen=True)
class PipelineSection:
    max_batch_records: int = 1000  # flush a size-flushed sink (aggregates, search) every N records...
    flush_interval: float = 1.0  # ... or when its oldest unflushed record is this many seconds old
    commit_interval: float = 5.0  # checkpoint what every sink made durable at most this often
    max_outage_seconds: float = 900.0  # retry a failing sink this long (from its first failure), then stop
    retry_attempts: int = 0  # an extra limit by count per call (0: none; the time budget decides)
    retry_base_seconds: float = 0.1
    retry_max_seconds: float = 20.0

    def validate(self, prefix: str) -> None:
        _positive(self.max_batch_records, f"{prefix}.max_batch_records")
        if self.retry_attempts < 0:
            raise ConfigError(f"{prefix}.retry_attempts", f"must be >= 0 (0: no limit), got {self.retry_attempts}")
        if not 0 < self.max_outage_seconds <= 7 * 24 * 3600:
            raise ConfigError(f"{prefix}.max_outage_seconds", f"must be in (0, 604800], got {self.max_outage_seconds}")
        if self.flush_interval < 0:
            raise ConfigError(f"{prefix}.flush_interval", "must be >= 0 seconds")
        if self.commit_interval < 0:
            raise ConfigError(f"{prefix}.commit_interval", "must be >= 0 seconds")
        if self.retry_base_seconds < 0 or self.retry_max_seconds < self.retry_base_seconds:
            raise ConfigError(f"{prefix}.retry_max_seconds", "must be >= retry_base_seconds >= 0")


@dataclass(frozen=True)
class DeadLetterSection:
    """``s3://bucket/prefix`` or a local directory (``file://path`` or a plain path)."""

    url: str = "deadletters"

    def validate(self, prefix: str) -> None:
        if not self.url:
            raise ConfigError(f"{prefix}.url", "must not be empty: parked records need a home")
        if self.url.startswith("s3://"):
            _check_s3_url(self.url, f"{prefix}.url")


@dataclass(frozen=True)
class AggregateSection:
    """One derived table of counts and sums per group (see ``worker.sinks.aggregates``)."""

    name: str
    table: str
    group_by: list[str]
    metrics: dict[str, str]
    where: dict[str, Any] = field(default_factory=dict)
    missing_group: Literal["skip", "null"] = "skip"

    def validate(self, prefix: str) -> None:
        if not self.name:
            raise ConfigError(f"{prefix}.name", "must not be empty")
        # Paths, metrics, the where filter and reserved names: one definition, shared with the sink.
        from worker.sinks.aggregates.spec import compile_aggregate

        compile_aggregate(self, prefix)


@dataclass(frozen=True)
class AggregateWritesSection:
    """How the aggregates sink writes its rows (one setting for every ``[[aggregates]]``)."""

    concurrency: int = 8  # row writes (or transactions) in flight
    transaction_rows: int = 100  # a flush writing at least this many rows uses TransactWriteItems; 0: never

    def validate(self, prefix: str) -> None:
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"{prefix}.concurrency", f"must be 1..64, got {self.concurrency}")
        if self.transaction_rows < 0:
            raise ConfigError(f"{prefix}.transaction_rows", f"must be >= 0 (0: never), got {self.transaction_rows}")


@dataclass(frozen=True)
class SearchSection:
    """The OpenSearch index kept equal to the table (see ``worker.sinks.search``)."""

    url: str = ""  # empty: embedded osmem-server in local runs; required otherwise
    index: str = "orders"
    auth: Literal["none", "basic", "sigv4"] = "none"
    username: str = ""
    password: str = ""
    sigv4_service: Literal["es", "aoss"] = "es"
    region: str = ""  # SigV4 signing region; default: worker.region
    verify_tls: bool = True
    ca_certs: str = ""
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    decimals: Literal["number", "string"] = "number"
    ttl_policy: Literal["delete", "mark"] = "delete"
    template: str = ""  # a JSON mapping/template file, applied when the index is missing
    meta_field: str = "_stream"  # per-document ordering metadata: {seq, deleted, expired}
    live_alias: str = ""  # if set, created with the index: a filtered alias without tombstones
    bulk_max_actions: int = 1000
    bulk_max_bytes: int = 5_000_000  # per request; under the 10 MB limit of small Amazon OpenSearch instances
    timeout_seconds: float = 30.0

    def validate(self, prefix: str) -> None:
        _positive(self.bulk_max_actions, f"{prefix}.bulk_max_actions")
        _positive(self.bulk_max_bytes, f"{prefix}.bulk_max_bytes")
        if self.auth == "basic" and not self.username:
            raise ConfigError(f"{prefix}.username", "required when auth = 'basic'")
        if self.include and self.exclude:
            raise ConfigError(f"{prefix}.exclude", "use include or exclude, not both")
        if self.url:
            _check_http_url(self.url, f"{prefix}.url")
        _check_index(self.index, f"{prefix}.index")
        if self.live_alias:
            _check_index(self.live_alias, f"{prefix}.live_alias")
        if self.region:
            _check_region(self.region, f"{prefix}.region")
        if not self.meta_field or "." in self.meta_field:
            raise ConfigError(f"{prefix}.meta_field", "must be a non-empty top-level field name")
        if self.meta_field in self.rename.values():
            raise ConfigError(f"{prefix}.rename", f"must not rename onto meta_field {self.meta_field!r}")
        _bounded(self.timeout_seconds, f"{prefix}.timeout_seconds", MAX_CALL_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class ArchiveSection:
    """Every raw record, gzip JSON Lines in S3 (see ``worker.sinks.archive``)."""

    bucket: str = ""
    prefix: str = "changes/"
    # Rotation: an object closes at whichever comes first. An open object is
    # rewritten (one PUT of its size so far) at every flush, so these also bound
    # the write amplification.
    max_records: int = 10_000
    max_bytes: int = 64 * 1024 * 1024  # uncompressed JSON Lines
    max_age_seconds: float = 300.0
    # If-None-Match / If-Match on every PUT; false only for S3-compatible stores without them.
    conditional_writes: bool = True
    compress_level: int = 2  # ISA-L gzip, 0 (fastest) .. 3 (smallest)

    def validate(self, prefix: str) -> None:
        if not self.bucket:
            raise ConfigError(f"{prefix}.bucket", "required when [archive] is present")
        if not _BUCKET.fullmatch(self.bucket):
            raise ConfigError(f"{prefix}.bucket", f"not an S3 bucket name: {self.bucket!r}")
        if self.prefix.startswith("/") or (self.prefix and not self.prefix.endswith("/")):
            raise ConfigError(f"{prefix}.prefix", f"must end with '/' and not start with one, got {self.prefix!r}")
        _positive(self.max_records, f"{prefix}.max_records")
        _positive(self.max_bytes, f"{prefix}.max_bytes")
        if self.max_age_seconds < 0:  # 0: an object per commit tick
            raise ConfigError(f"{prefix}.max_age_seconds", f"must be >= 0, got {self.max_age_seconds}")
        if not 0 <= self.compress_level <= 3:
            raise ConfigError(
                f"{prefix}.compress_level", f"must be 0..3 (ISA-L's gzip levels), got {self.compress_level}"
            )


@dataclass(frozen=True)
class KclSection:
    """The KCL 3 launcher (see ``worker daemon``)."""

    application_name: str = ""  # the lease table's name; default worker-<worker.table>
    stream_arn: str = ""  # or derived from worker.table
    initial_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    worker_id: str = ""  # default: hostname
    http_port: int = 9400
    http_host: str = "0.0.0.0"  # the health/metrics endpoint's bind address
    checkpoint_retries: int = 10  # throttled checkpoints, with backoff (pipeline.retry_*_seconds)
    metrics_dir: str = ""  # shard processes' metric files; default $WORKER_METRICS_DIR or a temp dir
    stall_seconds: float = 600.0  # /readyz fails when a batch has been in flight this long
    # KCL 3's worker metrics (CPU of the host, for lease balancing) probe EC2 instance metadata at
    # start-up. Rendered as `disableWorkerMetrics`; true for local runs and tests (never probe there),
    # false by default in production where KCL balances leases on them (EC2, ECS and EKS hosts).
    disable_worker_metrics: bool = False
    # CloudWatch Embedded Metric Format, for teams without Prometheus: "" (off), "stderr" or a file path.
    emf_output: str = ""
    emf_namespace: str = "Worker"
    emf_interval_seconds: float = 60.0
    # Extra KCL multilang properties, verbatim (failoverTimeMillis, maxLeasesForWorker, ...).
    properties: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        # The lease table's name, and the prefix of KCL's two other tables.
        _check_table(self.application_name, f"{prefix}.application_name", required=False)
        if not 0 < self.http_port < 65536:
            raise ConfigError(f"{prefix}.http_port", f"must be a TCP port, got {self.http_port}")
        _positive(self.checkpoint_retries, f"{prefix}.checkpoint_retries")
        if self.stall_seconds <= 0:
            raise ConfigError(f"{prefix}.stall_seconds", "must be > 0")
        if self.emf_interval_seconds <= 0:
            raise ConfigError(f"{prefix}.emf_interval_seconds", "must be > 0")
        if self.emf_output and not self.emf_namespace:
            raise ConfigError(f"{prefix}.emf_namespace", "must not be empty when emf_output is set")
        for key, value in self.properties.items():
            if isinstance(value, dict | list) or value is None:
                raise ConfigError(f"{prefix}.properties.{key}", "must be a string, number or boolean")


@dataclass(frozen=True)
class LocalSection:
    """``worker local`` defaults; paths are relative to the configuration file."""

    fixtures: list[str] = field(default_factory=list)
    state_dir: str = ".local"


@dataclass(frozen=True)
class Config:
    worker: WorkerSection = field(default_factory=WorkerSection)
    aws: AwsSection = field(default_factory=AwsSection)
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    deadletter: DeadLetterSection = field(default_factory=DeadLetterSection)
    aggregates: list[AggregateSection] = field(default_factory=list)
    aggregate_writes: AggregateWritesSection = field(default_factory=AggregateWritesSection)
    search: SearchSection | None = None
    archive: ArchiveSection | None = None
    kcl: KclSection = field(default_factory=KclSection)
    local: LocalSection = field(default_factory=LocalSection)
    source: str = ""  # the file it came from ("" for defaults only)

    def validate(self, prefix: str) -> None:
        for i, a in enumerate(self.aggregates):
            _check_table(a.table, f"aggregates[{i}].table", required=True)
        names = [a.name for a in self.aggregates]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ConfigError(f"aggregates[{i}].name", f"duplicate aggregate name {n!r}")

    def resolve(self, path: str) -> Path:
        """A path from the file, taken relative to the file's directory."""
        p = Path(path)
        if p.is_absolute() or not self.source:
            return p
        return Path(self.source).parent / p


# -- loading ------------------------------------------------------------------------


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load, override from ``env`` and validate; raises :class:`ConfigError`.

    An error names the dotted key and where its value came from: the file, or
    the ``WORKER__*`` variable that set it. After validation, ``worker.region``
    falls back to ``AWS_REGION`` then ``AWS_DEFAULT_REGION`` (from ``env``), and
    ``kcl.application_name`` to ``worker-<worker.table>``.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = ""
    if path is not None:
        source = os.fspath(path)
        try:
            with open(source, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("(file)", f"configuration file not found: {source}") from None
        except IsADirectoryError:
            raise ConfigError("(file)", f"a directory, not a configuration file: {source}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", f"invalid TOML: {exc}", source=source) from None
    try:
        origins = apply_env(data, env)
        _refuse_empty(data)
        cfg = build(Config, {**data, "source": source}, "")
    except ConfigError as exc:
        origin = exc.source or _origin(exc.key, locals().get("origins", {})) or source or None
        raise ConfigError(exc.key, exc.reason, source=origin) from None
    return _derive(cfg, env)


# Keys whose default is "unset, then derived": an explicit empty value is a mistake, not a choice.
_NOT_EMPTY = (("worker", "table"), ("worker", "region"), ("kcl", "application_name"))


def _refuse_empty(data: Mapping[str, Any]) -> None:
    from worker.config_convert import EnvValue

    for section, key in _NOT_EMPTY:
        node = data.get(section)
        value = node.get(key) if isinstance(node, Mapping) else None
        raw = value.raw if isinstance(value, EnvValue) else value
        if isinstance(raw, str) and not raw.strip():
            where = value.name if isinstance(value, EnvValue) else None
            raise ConfigError(f"{section}.{key}", "must not be empty (leave it out to use the default)", source=where)


def _origin(key: str, origins: Mapping[str, str]) -> str | None:
    """The variable that set ``key`` (or the closest enclosing key), if one did."""
    k = key
    while k:
        if k in origins:
            return origins[k]
        k = k.rsplit(".", 1)[0] if "." in k else ""
    return None


def _derive(cfg: Config, env: Mapping[str, str]) -> Config:
    worker, kcl = cfg.worker, cfg.kcl
    if not worker.region:
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
        if region:
            try:
                _check_region(region, "worker.region")
            except ConfigError as exc:
                var = "AWS_REGION" if env.get("AWS_REGION") else "AWS_DEFAULT_REGION"
                raise ConfigError(exc.key, exc.reason, source=var) from None
            worker = dataclasses.replace(worker, region=region)
    if not kcl.application_name and worker.table:
        kcl = dataclasses.replace(kcl, application_name=f"worker-{worker.table}")
    return dataclasses.replace(cfg, worker=worker, kcl=kcl)


def require_runtime(cfg: Config) -> None:
    """What every command that talks to AWS needs: a region, a table and an application name.

    Raised at start-up (``worker daemon``, ``kcl``, ``check-config``, ``checkpoints``).
    """
    if not cfg.worker.region:
        raise ConfigError(
            "worker.region", "not set: set worker.region (WORKER__WORKER__REGION), AWS_REGION or AWS_DEFAULT_REGION"
        )
    if not cfg.worker.table and not (cfg.kcl.stream_arn and cfg.kcl.application_name):
        raise ConfigError("worker.table", "required: the source table (WORKER__WORKER__TABLE)")
    if not cfg.kcl.application_name:
        raise ConfigError("kcl.application_name", "required (default: worker-<worker.table>)")


MAX_CALL_TIMEOUT_SECONDS = 300.0  # one call may hang this long at most, whatever the configuration


def _bounded(v: float, key: str, most: float) -> None:
    if not 0 < v <= most:
        raise ConfigError(key, f"must be in (0, {most:g}] seconds, got {v}")


def _positive(v: int, key: str) -> None:
    if v <= 0:
        raise ConfigError(key, f"must be > 0, got {v}")


# -- names and URLs (one home: check-config and start-up use the same rules) -------------

_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-\d+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_INDEX_FORBIDDEN = set('\\/*?"<>| ,#:')


def _check_table(name: str, key: str, *, required: bool) -> None:
    if not name:
        if required:
            raise ConfigError(key, "must not be empty")
        return
    if not _TABLE.fullmatch(name):
        raise ConfigError(key, f"not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -): {name!r}")


def _check_region(region: str, key: str) -> None:
    if not _REGION.fullmatch(region):
        raise ConfigError(key, f"not an AWS region (like eu-west-1): {region!r}")


def _check_http_url(url: str, key: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ConfigError(key, f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be http(s)://host[:port], got {mask_url(url)!r}")


def _check_s3_url(url: str, key: str) -> None:
    bucket = url[len("s3://") :].split("/", 1)[0]
    if not bucket:
        raise ConfigError(key, f"s3 URL needs a bucket (s3://bucket/prefix/), got {url!r}")
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError(key, f"not an S3 bucket name: {bucket!r}")


def _check_index(name: str, key: str) -> None:
    if not name:
        raise ConfigError(key, "must not be empty")
    bad = sorted(set(name) & _INDEX_FORBIDDEN)
    if name != name.lower() or bad or name[0] in "-_+" or name in (".", "..") or len(name.encode()) > 255:
        raise ConfigError(
            key, f"not an OpenSearch index name (lowercase, no {' '.join(bad) or 'leading - _ +'}): {name!r}"
        )


def mask_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
