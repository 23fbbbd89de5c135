"""The configuration as operators read it: the effective values (secrets masked) and the key table.

* :func:`dump` renders a loaded :class:`~worker.config.Config` as TOML, with every
  secret (a key in :data:`SECRET_KEYS`, a password in a URL) replaced by ``***``.
* :func:`key_table` renders the table of every key (type, default, variable,
  meaning) from the schema itself; the README holds its output between
  :data:`BEGIN` and :data:`END`, and a test fails when that copy is stale.
  Regenerate it with ``python -m worker.config_docs README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from worker.config import Config, mask_url
from worker.config_convert import ENV_PREFIX

SECRET_KEYS = frozenset({"password", "secret", "token", "secret_access_key", "session_token"})
MASK = "***"
BEGIN = "<!-- config-keys:begin (generated: python -m worker.config_docs README.md) -->"
END = "<!-- config-keys:end -->"

# One line per key, what an operator needs to decide its value. `[]` marks an array of tables.
DOCS: dict[str, str] = {
    "worker.table": "The source table: its stream is read, the archive is partitioned by it. Required to run.",
    "worker.region": "AWS region. Default: `AWS_REGION`, else `AWS_DEFAULT_REGION`; none is a start-up error.",
    "worker.log_format": "`auto` (JSON unless stderr is a terminal), `json` or `console`.",
    "worker.log_level": "`debug`, `info`, `warning` or `error`.",
    "worker.data_dir": "Writable directory for state (replay progress). `/app/data` in the image.",
    "aws.endpoint_url": "Endpoint for every AWS service (emulators, VPC endpoints). Empty: AWS.",
    "aws.dynamodb_endpoint_url": "DynamoDB endpoint, overriding `aws.endpoint_url`.",
    "aws.streams_endpoint_url": "DynamoDB Streams endpoint, overriding `aws.endpoint_url`.",
    "aws.s3_endpoint_url": "S3 endpoint, overriding `aws.endpoint_url`.",
    "aws.connect_timeout_seconds": "Connect timeout per AWS call (at most 300; botocore makes one try per call).",
    "aws.read_timeout_seconds": "Read timeout per AWS call (at most 300; the pipeline's time budget retries).",
    "pipeline.flush_interval": "Flush aggregates and search when their oldest unflushed record is this old (s).",
    "pipeline.commit_interval": "Checkpoint what every sink made durable at most this often (s).",
    "pipeline.max_batch_records": "Flush the sinks (and checkpoint) at least every N records.",
    "pipeline.retry_attempts": "An extra limit by count per call (0: none; `max_outage_seconds` decides).",
    "pipeline.max_outage_seconds": "Retry a failing sink this long from its first failure, then stop (no checkpoint).",
    "pipeline.retry_base_seconds": "Backoff base: full jitter in [0, min(max, base * 2^attempt)].",
    "pipeline.retry_max_seconds": "Backoff cap per attempt.",
    "deadletter.url": "Parked records: `s3://bucket/prefix/`, or a local directory (relative to the file).",
    "aggregates[].name": "Name of the aggregate (unique).",
    "aggregates[].table": "DynamoDB table holding its groups (several aggregates may share one).",
    "aggregates[].group_by": "Attribute paths of the group key (`status`, `ship.city`).",
    "aggregates[].metrics": "Name to `count` or `sum(attribute)`.",
    "aggregates[].where": "Only items whose attributes equal these values.",
    "aggregates[].missing_group": "Items without a group attribute: `skip`, or group under `null`.",
    "aggregate_writes.concurrency": "Aggregate row writes (or transactions) in flight per shard process.",
    "aggregate_writes.transaction_rows": (
        "A flush writing at least this many aggregate rows writes them in TransactWriteItems of up to 100"
        " (2 WCU per row-KB instead of 1; about a tenth of the CPU, a hundredth of the calls). 0: never."
    ),
    "search.url": "OpenSearch endpoint `https://host:port`. Required outside `worker local`.",
    "search.index": "Index kept equal to the table.",
    "search.auth": "`none`, `basic` (username, password) or `sigv4` (the task's role).",
    "search.username": "Basic auth user.",
    "search.password": "Basic auth password (a secret: masked in every output).",
    "search.sigv4_service": "`es` (Amazon OpenSearch Service) or `aoss` (Serverless).",
    "search.region": "SigV4 signing region. Default: `worker.region`.",
    "search.verify_tls": "Verify the server's certificate.",
    "search.ca_certs": "CA bundle file for a private CA.",
    "search.include": "Only these attributes in documents.",
    "search.exclude": "Every attribute but these.",
    "search.rename": "Attribute to document field names.",
    "search.decimals": "Numbers as JSON `number` or exact `string`.",
    "search.ttl_policy": "Items deleted by TTL: `delete` the document, or `mark` it.",
    "search.template": "JSON mapping/template file applied when the index is missing.",
    "search.meta_field": "Per-document ordering metadata field.",
    "search.live_alias": "Filtered alias without tombstones, created with the index.",
    "search.bulk_max_actions": "Documents per bulk request.",
    "search.bulk_max_bytes": "Bytes per bulk request (under the domain's HTTP limit).",
    "search.timeout_seconds": "Per request.",
    "archive.bucket": "S3 bucket of the archive. Required with `[archive]`.",
    "archive.prefix": "Key prefix, ending with `/`.",
    "archive.max_records": "Rotate an object after this many records.",
    "archive.max_bytes": "Rotate after this many uncompressed bytes.",
    "archive.max_age_seconds": "Rotate after this many seconds.",
    "archive.conditional_writes": "If-None-Match / If-Match on every PUT (false only for stores without them).",
    "archive.compress_level": (
        "gzip level of ISA-L, 0 (fastest) to 3 (smallest); 2 writes about 1/7 of the JSON at about 3 µs per record."
    ),
    "kcl.application_name": "KCL application: the lease table's name. Default `worker-<worker.table>`.",
    "kcl.stream_arn": "Stream to read. Default: the latest stream of `worker.table`.",
    "kcl.initial_position": "Where a new lease starts: `TRIM_HORIZON` or `LATEST`.",
    "kcl.worker_id": "KCL worker id. Default: the host name.",
    "kcl.http_port": "Port of `/healthz`, `/readyz`, `/metrics` (the only port setting).",
    "kcl.http_host": "Bind address of that endpoint.",
    "kcl.checkpoint_retries": "Throttled checkpoints retried with backoff.",
    "kcl.metrics_dir": "Shard processes' metric files. Default `$WORKER_METRICS_DIR` or a temporary directory.",
    "kcl.stall_seconds": "`/readyz` fails when a batch has been in flight this long.",
    "kcl.disable_worker_metrics": "Render `disableWorkerMetrics`: no EC2 metadata probe (true off AWS hosts).",
    "kcl.emf_output": "CloudWatch Embedded Metric Format every interval: empty (off), `stderr`, or a file path.",
    "kcl.emf_namespace": "CloudWatch namespace of the EMF metrics (dimension `Application`).",
    "kcl.emf_interval_seconds": "Seconds between EMF documents.",
    "kcl.properties": "Extra KCL multilang properties, verbatim (`maxLeasesForWorker`, ...).",
    "local.fixtures": "`worker local` fixture files (relative to the file).",
    "local.state_dir": "`worker local` state (relative to the file).",
}


def is_secret(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in SECRET_KEYS


def masked(value: Any, key: str = "") -> Any:
    """``value`` with secrets masked: secret keys, and passwords inside URLs."""
    if is_secret(key):
        return MASK if value else value
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: masked(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    return value


def dump(cfg: Config) -> str:
    """The effective configuration as TOML, secrets masked."""
    data = masked(dataclasses.asdict(cfg))
    source = data.pop("source", "")
    out = [f"# effective configuration (file: {source or 'none'}; WORKER__* variables applied; secrets masked)"]
    for section, value in data.items():
        if value is None:
            out.append(f"\n# [{section}] not configured")
        elif isinstance(value, list):
            for item in value:
                out.append(f"\n[[{section}]]")
                out.extend(f"{k} = {_toml(v)}" for k, v in item.items())
        else:
            out.append(f"\n[{section}]")
            out.extend(f"{k} = {_toml(v)}" for k, v in value.items())
    return "\n".join(out) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


# -- the key table ---------------------------------------------------------------------


def schema_keys() -> list[tuple[str, str, str, str]]:
    """Every key as (dotted key, type, default, variable), in schema order."""
    rows: list[tuple[str, str, str, str]] = []
    hints = get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        tp = hints[f.name]
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            tp = next(a for a in get_args(tp) if a is not type(None))
        if get_origin(tp) is list:
            (section,) = get_args(tp)
            _section_rows(rows, section, f"{f.name}[]", f"{ENV_PREFIX}{f.name.upper()}__<n>__")
        else:
            _section_rows(rows, tp, f.name, f"{ENV_PREFIX}{f.name.upper()}__")
    return rows


def _section_rows(rows: list[tuple[str, str, str, str]], section: Any, prefix: str, env: str) -> None:
    hints = get_type_hints(section)
    for f in dataclasses.fields(section):
        default = "(required)"
        if f.default is not dataclasses.MISSING:
            default = _toml(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _toml(f.default_factory())
        if default == '""':
            default = "(empty)"
        rows.append((f"{prefix}.{f.name}", _type_name(hints[f.name]), default, f"{env}{f.name.upper()}"))


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "table"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


def key_table() -> str:
    """The Markdown table of every key, between the README's markers."""
    lines = [BEGIN, "| key | type | default | environment variable | meaning |", "|---|---|---|---|---|"]
    for key, tp, default, env in schema_keys():
        shown = default if default.startswith("(") else f"`{default}`"
        lines.append(f"| `{key}` | {tp} | {shown} | `{env}` | {DOCS.get(key, '')} |")
    lines.append(END)
    return "\n".join(lines)


def replace_table(text: str) -> str:
    """``text`` (the README) with its generated table replaced by the current one."""
    head, sep, rest = text.partition(BEGIN)
    if not sep:
        raise ValueError(f"no {BEGIN!r} marker")
    _, sep, tail = rest.partition(END)
    if not sep:
        raise ValueError(f"no {END!r} marker")
    return head + key_table() + tail


def main(argv: list[str]) -> int:
    if not argv:
        sys.stdout.write(key_table() + "\n")
        return 0
    path = Path(argv[0])
    path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
