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
    from worker.commands import add_parser as add

    p = add(
        sub,
        "daemon",
        "run under KCL 3: launcher, shard processes, health and metrics (the container's entrypoint)",
        "Render the KCL properties from the configuration, start the KCL 3 launcher (Java), which\n"
        "runs one `worker kcl` process per shard lease, forward SIGTERM to it for a graceful\n"
        "shutdown, and serve /healthz, /readyz and /metrics on [kcl] http_port for every shard\n"
        "process of the container. Exits with the launcher's exit code.",
        "  worker daemon --config /app/config/worker.toml\n"
        "  worker daemon --print-properties            (what KCL would be given, then exit)\n"
        "  WORKER__WORKER__TABLE=Orders AWS_REGION=eu-west-1 worker daemon   (no file)",
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

    from worker.commands import config_path as path_of
    from worker.commands import load_config
    from worker.errors import ConfigError
    from worker.metrics import ENV_DIR, Collector
    from worker.runtime import properties
    from worker.runtime.http import Endpoint
    from worker.runtime.launcher import Launcher, LauncherCommand, install_forwarding

    given = path_of(args)
    config_path = str(Path(given).resolve()) if given else None
    cfg = load_config(args, runtime=True)
    port = cfg.kcl.http_port  # the one setting: [kcl] http_port / WORKER__KCL__HTTP_PORT
    legacy = os.environ.get("WORKER_HTTP_PORT", "")
    if legacy and legacy != str(port):  # an older image's variable: refuse it rather than guess
        raise ConfigError(
            "WORKER_HTTP_PORT", f"is not read (it was {legacy!r}, kcl.http_port is {port}): set WORKER__KCL__HTTP_PORT"
        )
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

    env = {**os.environ, ENV_DIR: str(metrics_dir)}
    # The JVM logs like this process (launcher/src/main/resources/worker-kcl-logback.xml).
    fmt = cfg.worker.log_format
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    env.setdefault("WORKER_KCL_LOG_FORMAT", "json" if use_json else "console")
    if config_path:
        env["WORKER_CONFIG"] = config_path
    collector = Collector(metrics_dir)  # one per daemon: it retires finished shards' files (HTTP and EMF share it)
    launcher = Launcher(LauncherCommand.from_env(os.environ).argv(str(props_path)), env=env)
    try:
        endpoint = Endpoint(
            cfg.kcl.http_host,
            port,
            collector,
            launcher_up=lambda: launcher.running,
            stall_seconds=cfg.kcl.stall_seconds,
        )
    except OSError as exc:
        raise ConfigError("kcl.http_port", f"cannot listen on {cfg.kcl.http_host}:{port}: {exc}") from exc
    from worker.log import get_logger

    emf = _emf_writer(cfg, collector, launcher_up=lambda: launcher.running)
    launcher.start()  # before the HTTP thread exists (the fork runs a preexec function)
    install_forwarding(launcher)
    endpoint.start()
    if emf is not None:
        emf.start()
    get_logger("worker.daemon").info(
        "serving health and metrics", port=endpoint.port, properties=str(props_path), metrics_dir=str(metrics_dir)
    )
    try:
        return launcher.wait()
    finally:
        endpoint.close()
        if emf is not None:
            emf.close()


def _emf_writer(cfg: Any, collector: Any, *, launcher_up: Any) -> Any:
    """The optional CloudWatch EMF writer ([kcl] emf_output), or None."""
    if not cfg.kcl.emf_output:
        return None
    from worker.metrics_emf import EmfWriter

    out: Any = sys.stderr
    if cfg.kcl.emf_output != "stderr":
        out = open(cfg.kcl.emf_output, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the daemon)
    return EmfWriter(
        collector,
        out,
        launcher_up=launcher_up,
        namespace=cfg.kcl.emf_namespace,
        application=cfg.kcl.application_name,
        interval=cfg.kcl.emf_interval_seconds,
    )


def clear_metrics(directory: Path) -> None:
    """Forget metric files of an earlier run (counters restart with the daemon)."""
    from worker.metrics import SUFFIX

    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.suffix == SUFFIX or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
