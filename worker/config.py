"""Configuration: TOML files, overridden by environment variables, validated at start-up.

Precedence (highest first): ``WORKER__SECTION__KEY`` environment variables, the
TOML file, the defaults below. An environment value is read as a TOML value
when it parses as one (``42``, ``true``, ``["a"]``) and as a plain string
otherwise. Arrays of tables take an index: ``WORKER__AGGREGATES__0__TABLE``.

Every error is a :class:`~worker.errors.ConfigError` naming the dotted key
(``search.bulk_max_bytes``) and the reason; unknown keys are errors too, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from worker.errors import ConfigError

ENV_PREFIX = "WORKER__"


# -- sections ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSection:
    table: str = "Orders"  # the source table (archive partitions, reports)
    region: str = "us-east-1"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class AwsSection:
    """Endpoints for emulators; empty means the real AWS endpoint."""

    endpoint_url: str = ""
    dynamodb_endpoint_url: str = ""
    streams_endpoint_url: str = ""
    s3_endpoint_url: str = ""
    connect_timeout_seconds: float = 5.0  # per call; botocore does not retry (the pipeline's budget does)
    read_timeout_seconds: float = 30.0

    def validate(self, prefix: str) -> None:
        for key in ("connect_timeout_seconds", "read_timeout_seconds"):
            _bounded(getattr(self, key), f"{prefix}.{key}", MAX_CALL_TIMEOUT_SECONDS)

    def endpoint(self, service: str) -> str | None:
        specific = {
            "dynamodb": self.dynamodb_endpoint_url,
            "dynamodbstreams": self.streams_endpoint_url,
            "s3": self.s3_endpoint_url,
        }.get(service, "")
        return specific or self.endpoint_url or None


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
        if self.url.startswith("s3://") and len(self.url) <= len("s3://"):
            raise ConfigError(f"{prefix}.url", "s3 URL needs a bucket")


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
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.url", f"must start with http:// or https://, got {self.url!r}")
        if not self.index:
            raise ConfigError(f"{prefix}.index", "must not be empty")
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
    compress_level: int = 6  # gzip, 1 (fast) .. 9 (small)

    def validate(self, prefix: str) -> None:
        if not self.bucket:
            raise ConfigError(f"{prefix}.bucket", "required when [archive] is present")
        if self.prefix.startswith("/") or (self.prefix and not self.prefix.endswith("/")):
            raise ConfigError(f"{prefix}.prefix", f"must end with '/' and not start with one, got {self.prefix!r}")
        _positive(self.max_records, f"{prefix}.max_records")
        _positive(self.max_bytes, f"{prefix}.max_bytes")
        if self.max_age_seconds < 0:  # 0: an object per commit tick
            raise ConfigError(f"{prefix}.max_age_seconds", f"must be >= 0, got {self.max_age_seconds}")
        if not 1 <= self.compress_level <= 9:
            raise ConfigError(f"{prefix}.compress_level", f"must be 1..9, got {self.compress_level}")


@dataclass(frozen=True)
class KclSection:
    """The KCL 3 launcher (see ``worker daemon``)."""

    application_name: str = "worker"
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
    # Extra KCL multilang properties, verbatim (failoverTimeMillis, maxLeasesForWorker, ...).
    properties: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        if not self.application_name or " " in self.application_name:
            raise ConfigError(f"{prefix}.application_name", "must be non-empty, without spaces (the lease table name)")
        if not 0 < self.http_port < 65536:
            raise ConfigError(f"{prefix}.http_port", f"must be a TCP port, got {self.http_port}")
        _positive(self.checkpoint_retries, f"{prefix}.checkpoint_retries")
        if self.stall_seconds <= 0:
            raise ConfigError(f"{prefix}.stall_seconds", "must be > 0")
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
    search: SearchSection | None = None
    archive: ArchiveSection | None = None
    kcl: KclSection = field(default_factory=KclSection)
    local: LocalSection = field(default_factory=LocalSection)
    source: str = ""  # the file it came from ("" for defaults only)

    def validate(self, prefix: str) -> None:
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
    """Load, override from ``env`` and validate; raises :class:`ConfigError`."""
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
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", f"invalid TOML: {exc}", source=source) from None
    _apply_env(data, env)
    try:
        cfg = _build(Config, {**data, "source": source}, "")
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.reason, source=source or None) from None
    return cfg


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt_is_index = parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({})
                node = node[idx]
                continue
            if part not in node or not isinstance(node[part], dict | list):
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        leaf = parts[-1]
        value = _env_value(raw)
        if isinstance(node, list):
            idx = int(leaf)
            while len(node) <= idx:
                node.append({})
            node[idx] = value
        else:
            node[leaf] = value


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "(root)", f"must be a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(prefix, key), f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be an array, got {type(value).__name__}")
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, inner = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table, got {type(value).__name__}")
        return {str(k): _coerce(inner, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {tp!r}")  # a bug in a section declaration


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


MAX_CALL_TIMEOUT_SECONDS = 300.0  # one call may hang this long at most, whatever the configuration


def _bounded(v: float, key: str, most: float) -> None:
    if not 0 < v <= most:
        raise ConfigError(key, f"must be in (0, {most:g}] seconds, got {v}")


def _positive(v: int, key: str) -> None:
    if v <= 0:
        raise ConfigError(key, f"must be > 0, got {v}")
