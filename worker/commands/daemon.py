"""``worker daemon [--config FILE]``: the container entrypoint.

Renders the KCL properties from the configuration (and ``WORKER__*``
variables), starts the KCL launcher (``java -cp "$WORKER_KCL_CLASSPATH_DIR/*"
$WORKER_KCL_MAIN_CLASS <properties>``), forwards SIGTERM/SIGINT to it, serves
``/healthz``, ``/readyz`` and ``/metrics`` for every shard process of the
container, and exits with the launcher's exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("daemon", help="run under KCL 3: launcher, shard processes, health and metrics")
    p.add_argument(
        "--config",
        default=os.environ.get("WORKER_CONFIG") or None,
        help="configuration file (TOML; default $WORKER_CONFIG); WORKER__SECTION__KEY variables override it",
    )
    p.add_argument("--properties", metavar="PATH", help="where to write the KCL properties (default: a temp dir)")
    p.add_argument("--print-properties", action="store_true", help="print the KCL properties and exit")
    p.add_argument(
        "--kcl-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a KCL property, winning over [kcl] properties (repeatable; `worker local --engine kcl` tunes KCL so)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from worker import config, log
    from worker.errors import ConfigError
    from worker.metrics import ENV_DIR, Collector
    from worker.runtime import properties
    from worker.runtime.http import Endpoint
    from worker.runtime.launcher import Launcher, LauncherCommand, install_forwarding

    config_path = str(Path(args.config).resolve()) if args.config else None
    cfg = config.load(config_path)
    log.configure(cfg.worker.log_format, cfg.worker.log_level)
    overrides = {}
    for item in args.kcl_property:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--kcl-property", f"expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    props = properties.render(
        cfg, stream_arn=properties.resolve_stream_arn(cfg), config_path=config_path, overrides=overrides
    )
    text = properties.dumps(props)
    if args.print_properties:
        sys.stdout.write(text)
        return 0

    run_dir = Path(tempfile.mkdtemp(prefix="worker-daemon-"))
    metrics_dir = Path(cfg.kcl.metrics_dir or os.environ.get(ENV_DIR) or run_dir / "metrics")
    clear_metrics(metrics_dir)
    props_path = Path(args.properties) if args.properties else run_dir / "kcl.properties"
    props_path.write_text(text, encoding="latin-1")

    port_env = os.environ.get("WORKER_HTTP_PORT", "")
    if port_env and not port_env.isdigit():
        raise ConfigError("WORKER_HTTP_PORT", f"must be a port number, got {port_env!r}")
    port = int(port_env) if port_env else cfg.kcl.http_port

    env = {**os.environ, ENV_DIR: str(metrics_dir)}
    # The JVM logs like this process (launcher/src/main/resources/worker-kcl-logback.xml).
    fmt = cfg.worker.log_format
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    env.setdefault("WORKER_KCL_LOG_FORMAT", "json" if use_json else "console")
    if config_path:
        env["WORKER_CONFIG"] = config_path
    launcher = Launcher(LauncherCommand.from_env(os.environ).argv(str(props_path)), env=env)
    try:
        endpoint = Endpoint(
            cfg.kcl.http_host,
            port,
            Collector(metrics_dir),
            launcher_up=lambda: launcher.running,
            stall_seconds=cfg.kcl.stall_seconds,
        )
    except OSError as exc:
        raise ConfigError("kcl.http_port", f"cannot listen on {cfg.kcl.http_host}:{port}: {exc}") from exc
    import structlog

    launcher.start()  # before the HTTP thread exists (the fork runs a preexec function)
    install_forwarding(launcher)
    endpoint.start()
    structlog.get_logger("worker.daemon").info(
        "serving health and metrics", port=endpoint.port, properties=str(props_path), metrics_dir=str(metrics_dir)
    )
    try:
        return launcher.wait()
    finally:
        endpoint.close()


def clear_metrics(directory: Path) -> None:
    """Forget metric files of an earlier run (counters restart with the daemon)."""
    from worker.metrics import SUFFIX

    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.suffix == SUFFIX or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
