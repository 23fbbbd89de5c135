"""``worker local``: run fixture files through the pipeline and the configured sinks,
on embedded emulators when no endpoint is configured, and report the result."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.pipeline import Pipeline


def add_parser(sub: Any) -> None:
    from worker.commands import add_parser as add

    p = add(
        sub,
        "local",
        "run fixture files through every configured sink, locally",
        "Run fixture files (recorded stream records, any shape) through the pipeline and every\n"
        "configured sink, then print what each sink holds. Sinks without an endpoint run on\n"
        "embedded emulators (moto for DynamoDB and S3, osmem-server for OpenSearch), started\n"
        "and stopped by the command; nothing leaves the machine.",
        "  worker local --config config/local.toml\n"
        "  worker local --config config/local.toml --fixtures my-records.jsonl --json\n"
        "  bash .ci/dev local          (the same, from a checkout)",
    )
    p.add_argument("--fixtures", nargs="+", metavar="PATH", help="fixture files (default: [local] fixtures)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument(
        "--table-items",
        metavar="FILE",
        help="items (DynamoDB JSON, one per line) loaded into the emulated source table before its stream is "
        "enabled: they are backfilled while the fixtures are written to the table, and the sinks are fed from it",
    )
    p.add_argument("--table-key", metavar="NAME[:T][,SORT[:T]]", help="the source table's key (default: the fixtures')")
    p.add_argument(
        "--opensearch",
        choices=("osmem", "embedded"),
        default="osmem",
        help="search engine when search.url is empty: osmem-server (fast, default) or a real OpenSearch 2.x node "
        "(opensearch-node/, built by `bash .ci/dev build`)",
    )
    p.add_argument(
        "--engine",
        choices=("direct", "kcl"),
        default="direct",
        help="direct: fixtures straight into the pipeline; kcl: through a moto stream and `worker daemon` (Java)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from worker.commands import config_path as config_path_of
    from worker.commands import load_config
    from worker.errors import ConfigError

    cfg = load_config(args)
    fixtures = [str(p) for p in args.fixtures] if args.fixtures else [str(cfg.resolve(f)) for f in cfg.local.fixtures]
    if not fixtures:
        raise ConfigError("local.fixtures", "no fixture files: pass --fixtures PATH or set [local] fixtures")
    for f in fixtures:
        if not Path(f).is_file():
            raise ConfigError("--fixtures", f"not a file: {f}")
    items = None
    if args.table_items:  # read (and checked) before any emulator starts
        from worker.sources.table_items import read_items

        items = list(read_items(args.table_items))
    engines: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        cfg = _with_emulators(cfg, stack, engines, args.opensearch, source_table=items is not None)
        if args.engine == "kcl":
            from worker.runtime import local_engine

            given = config_path_of(args)
            config_path = str(Path(given).resolve()) if given else None
            report = local_engine.execute(
                cfg,
                fixtures,
                config_path=config_path,
                stack=stack,
                progress=sys.stderr,
                items=items,
                key_text=args.table_key,
            )
        elif items is not None:
            from worker.commands.local_items import execute_with_items

            report = execute_with_items(cfg, fixtures, items, args.table_key, stack=stack, report_of=report_of)
        else:
            report = execute(cfg, fixtures)
    if engines:
        report["engines"] = {**report.get("engines", {}), **engines}
    if args.json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_SORT_KEYS) + b"\n")
    else:
        sys.stdout.write(render(report, fixtures, cfg.deadletter.url))
    return 1 if report.get("stopped") else 0


def execute(cfg: Any, fixtures: list[str]) -> dict[str, Any]:
    """Run the fixtures; the report is built from the sinks' own view of their targets."""
    from worker.app import build_pipeline
    from worker.log import get_logger
    from worker.pipeline import StopProcessing
    from worker.sources import fixtures as fixture_source

    pipeline = build_pipeline(cfg, provision=True)
    stopped = None
    try:
        pipeline.add(fixture_source.read(fixtures))
        pipeline.flush()
    except StopProcessing as exc:
        stopped = str(exc)
        get_logger("worker.local").error("stopped", error=stopped)
    report = report_of(pipeline, stopped)
    pipeline.close()
    return report


def report_of(pipeline: Pipeline, stopped: str | None) -> dict[str, Any]:
    """The report: the pipeline's counters and each sink's own view of its target."""
    from worker.sinks import Reporting

    stats = pipeline.stats
    report: dict[str, Any] = {
        "records": stats.records,
        "kinds": {k: stats.kinds.get(k, 0) for k in ("INSERT", "MODIFY", "REMOVE")},
        "changes": dict(sorted(stats.changes.items())),
        "deadletters": stats.deadletters,
        "engines": {"stream": "direct"},
    }
    if stopped:
        report["stopped"] = stopped
    for sink in pipeline.sinks:
        if isinstance(sink, Reporting) and not stopped:
            report[sink.name] = sink.report()
    return report


def _with_emulators(
    cfg: Any, stack: contextlib.ExitStack, engines: dict[str, Any], opensearch: str, *, source_table: bool = False
) -> Any:
    """Start moto / the search engine for whatever has no endpoint configured; ``engines`` gets their names."""
    from worker.emulators import fake_aws_credentials, search_engine, start_moto, start_opensearch, start_osmem
    from worker.sinks import registry

    needed = registry.emulators(cfg)
    needs_aws = source_table or "aws" in needed or cfg.deadletter.url.startswith("s3://")
    if needs_aws and not cfg.aws.endpoint_url:
        stack.enter_context(fake_aws_credentials())
        moto = start_moto()
        stack.callback(moto.stop)
        cfg = dataclasses.replace(cfg, aws=dataclasses.replace(cfg.aws, endpoint_url=moto.url))
    if "opensearch" in needed and not cfg.search.url:
        if opensearch == "embedded":
            node = start_opensearch()
            stack.callback(node.stop)
            url = node.url
        else:
            server = start_osmem()
            stack.callback(server.close)
            url = server.url
        engines["search"] = search_engine(
            url, "embedded OpenSearch node" if opensearch == "embedded" else "osmem-server"
        )
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, url=url))
    return cfg


def render(report: dict[str, Any], fixtures: list[str], deadletters: str) -> str:
    """The human-readable summary."""
    out = [f"worker local: {report['records']} records from {', '.join(fixtures)}"]
    out.append("  records: " + ", ".join(f"{k} {v}" for k, v in report["kinds"].items()))
    out.append("  changes: " + (", ".join(f"{k} {v}" for k, v in report["changes"].items()) or "none"))
    out.append(f"  dead letters: {report['deadletters']}" + (f" (in {deadletters})" if report["deadletters"] else ""))
    if "backfill" in report:
        b = report["backfill"]
        out.append(
            f"  table: {b['items_loaded']} items loaded, {b['final_items']} at the end;"
            f" backfill: {b['scanned']} scanned, {b['changed_during_scan']} changed during the scan,"
            f" {b['snapshot_records']} snapshot records, {b['consumed_rcu']} RCU"
        )
    if report.get("leases"):
        out.append("  leases: " + ", ".join(f"{k} at {v}" for k, v in report["leases"].items()))
    if report.get("stopped"):
        out.append(f"  STOPPED: {report['stopped']}")
    for role, engine in report.get("engines", {}).items():
        text = ", ".join(f"{k} {v}" for k, v in engine.items()) if isinstance(engine, dict) else str(engine)
        out.append(f"  {role} engine: {text}")
    from worker.sinks import registry

    for name in registry.SINKS:
        if name in report:
            out.append(f"  {name}:")
            out.extend(registry.module(name).render(report[name]))
    return "\n".join(out) + "\n"
