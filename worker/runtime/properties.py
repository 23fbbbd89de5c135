"""The KCL multilang properties file, rendered from the worker configuration.

Keys and meanings follow ``launcher/README.md`` (KCL 3.1.3's multilang
configurator plus the launcher's own ``regionName`` and endpoint keys). The
stream is given as ``streamName`` holding the DynamoDB *stream ARN* (KCL
validates ``streamArn`` as a Kinesis ARN). ``[kcl] properties`` entries are
added last, verbatim, so they can override anything rendered here.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

from worker.config import Config
from worker.errors import ConfigError


def resolve_stream_arn(cfg: Config, describe: Callable[[str], str] | None = None) -> str:
    """``[kcl] stream_arn``, or the table's latest stream ARN (DescribeTable on ``worker.table``)."""
    if cfg.kcl.stream_arn:
        return cfg.kcl.stream_arn
    if describe is None:
        from worker.aws import client, stream_arn

        ddb = client(cfg, "dynamodb")

        def describe(table: str) -> str:
            return stream_arn(ddb, table)

    try:
        return describe(cfg.worker.table)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("kcl.stream_arn", f"not set, and the stream of table {cfg.worker.table!r}: {exc}") from exc


def render(
    cfg: Config,
    *,
    stream_arn: str,
    config_path: str | None,
    python: str = sys.executable,
    hostname: Callable[[], str] = socket.gethostname,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The properties, in a stable order; raises :class:`ConfigError` for values KCL cannot take.

    ``overrides`` (``worker daemon --kcl-property``) come last and win over ``[kcl] properties``.
    """
    command = [python, "-m", "worker", "kcl"]
    if config_path:
        command += ["--config", config_path]
    for part in command:
        if not part or any(c.isspace() for c in part):
            # KCL splits executableName on spaces, with no quoting.
            raise ConfigError("kcl.executableName", f"path must not contain spaces: {part!r}")
    props: dict[str, str] = {
        "executableName": " ".join(command),
        "processingLanguage": f"python/{sys.version_info.major}.{sys.version_info.minor}",
        "applicationName": cfg.kcl.application_name,
        "streamName": stream_arn,
        "AWSCredentialsProvider": "DefaultCredentialsProvider",
        "regionName": cfg.worker.region,
        "initialPositionInStream": cfg.kcl.initial_position,
        "workerId": cfg.kcl.worker_id or hostname(),
        # Our own /metrics replace KCL's CloudWatch metrics (set [kcl] properties to re-enable).
        "metricsLevel": "NONE",
        # Off: no instance-metadata probe (local runs and tests); on: KCL balances leases on host CPU.
        "disableWorkerMetrics": _text(cfg.kcl.disable_worker_metrics),
        # The pipeline flushes on each sink's cadence and checkpoints every commit_interval as
        # records arrive; empty polls must reach the shard process too, or an idle shard would
        # hold its last flushes and checkpoint back until the next record.
        "callProcessRecordsEvenForEmptyRecordList": "true",
    }
    endpoints = {
        "dynamoDBEndpoint": cfg.aws.endpoint("dynamodb"),
        "dynamoDBStreamsEndpoint": cfg.aws.endpoint("dynamodbstreams"),
        "cloudWatchEndpoint": cfg.aws.endpoint_url or None,
    }
    props.update({k: v for k, v in endpoints.items() if v})
    for key, value in cfg.kcl.properties.items():
        props[key] = _text(value)
    for key, value in (overrides or {}).items():
        props[key] = value
    return props


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dumps(props: Mapping[str, str]) -> str:
    """Java ``.properties`` text (ISO-8859-1 safe: anything else as ``\\uXXXX``)."""
    lines = ["# rendered by `worker daemon`; edits are overwritten at the next start"]
    lines += [f"{_escape(k, key=True)} = {_escape(v)}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def _escape(text: str, *, key: bool = False) -> str:
    out = []
    for i, c in enumerate(text):
        if c == "\\":
            out.append("\\\\")
        elif c in "\n\r\t\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}[c])
        elif (key and c in "=:#! ") or (c == " " and i == 0):
            out.append("\\" + c)
        elif ord(c) > 0xFF or ord(c) < 0x20:
            units = c.encode("utf-16-be")  # Java escapes UTF-16 code units (surrogate pairs)
            out.extend(f"\\u{int.from_bytes(units[j : j + 2], 'big'):04x}" for j in range(0, len(units), 2))
        else:
            out.append(c)
    return "".join(out)


_BLANK = " \t\f"


def loads(text: str) -> dict[str, str]:
    """Parse what :func:`dumps` writes (tests, ``--print-properties`` round trips)."""
    out: dict[str, str] = {}
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):  # not splitlines(): \x85 is data
        line = raw.lstrip(_BLANK)  # Java's whitespace, not Python's (\xa0 is data)
        if not line or line.startswith(("#", "!")):
            continue
        key, value = _split(line)
        out[_unescape(key)] = _unescape(value)
    return out


def _split(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in "=:" or c in _BLANK:
            key, rest = line[:i], line[i:].lstrip(_BLANK)
            if rest[:1] in ("=", ":"):
                rest = rest[1:].lstrip(_BLANK)
            return key, rest
        i += 1
    return line, ""


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            n = text[i + 1]
            if n == "u":
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append({"n": "\n", "r": "\r", "t": "\t", "f": "\f"}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")
