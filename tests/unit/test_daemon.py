"""`worker daemon`'s pure parts: KCL properties, the launcher command, metrics files and their exposition."""

from __future__ import annotations

import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from worker import config, metrics
from worker.errors import ConfigError
from worker.runtime import properties
from worker.runtime.launcher import DEFAULT_CLASSPATH_DIR, DEFAULT_MAIN_CLASS, LauncherCommand

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-11-22T00:00:00.000"


def cfg(**env: str) -> config.Config:
    return config.load(None, env={f"WORKER__{k.upper()}": v for k, v in env.items()})


# -- properties ---------------------------------------------------------------------------------


def test_properties_have_what_the_launcher_requires() -> None:
    props = properties.render(
        cfg(kcl__application_name="orders-worker", worker__region="eu-west-1"),
        stream_arn=ARN,
        config_path="/app/config/worker.toml",
        python="/opt/venv/bin/python",
        hostname=lambda: "pod-7",
    )
    assert props == {
        "executableName": "/opt/venv/bin/python -m worker kcl --config /app/config/worker.toml",
        "processingLanguage": props["processingLanguage"],
        "applicationName": "orders-worker",
        "streamName": ARN,
        "AWSCredentialsProvider": "DefaultCredentialsProvider",
        "regionName": "eu-west-1",
        "initialPositionInStream": "TRIM_HORIZON",
        "workerId": "pod-7",
        "metricsLevel": "NONE",
        "disableWorkerMetrics": "false",
        "callProcessRecordsEvenForEmptyRecordList": "true",
    }
    assert props["processingLanguage"].startswith("python/3.")


def test_endpoints_worker_id_position_and_extra_properties() -> None:
    c = cfg(
        aws__dynamodb_endpoint_url="http://ddb:8000",
        aws__streams_endpoint_url="http://streams:8000",
        kcl__worker_id="w-1",
        kcl__initial_position="LATEST",
    )
    c = config.Config(
        worker=c.worker,
        aws=c.aws,
        kcl=config.KclSection(
            worker_id="w-1",
            initial_position="LATEST",
            properties={"maxLeasesForWorker": 4, "metricsLevel": "SUMMARY", "cleanupLeasesUponShardCompletion": True},
        ),
    )
    props = properties.render(c, stream_arn=ARN, config_path=None, python="/py")
    assert props["executableName"] == "/py -m worker kcl"
    assert props["dynamoDBEndpoint"] == "http://ddb:8000"
    assert props["dynamoDBStreamsEndpoint"] == "http://streams:8000"
    assert "cloudWatchEndpoint" not in props
    assert props["workerId"] == "w-1"
    assert props["initialPositionInStream"] == "LATEST"
    assert props["maxLeasesForWorker"] == "4"
    assert props["metricsLevel"] == "SUMMARY"  # extra properties override what is rendered
    assert props["cleanupLeasesUponShardCompletion"] == "true"


def test_generic_endpoint_covers_every_client() -> None:
    props = properties.render(cfg(aws__endpoint_url="http://moto:5000"), stream_arn=ARN, config_path=None)
    assert props["dynamoDBEndpoint"] == props["dynamoDBStreamsEndpoint"] == props["cloudWatchEndpoint"]


def test_paths_with_spaces_are_refused_because_kcl_splits_the_command_on_spaces() -> None:
    with pytest.raises(ConfigError, match="spaces"):
        properties.render(cfg(), stream_arn=ARN, config_path="/my configs/w.toml", python="/py")


def test_stream_arn_from_config_or_from_the_table() -> None:
    assert properties.resolve_stream_arn(cfg(kcl__stream_arn=ARN), describe=lambda t: "unused") == ARN
    seen = []

    def describe(table: str) -> str:
        seen.append(table)
        return ARN

    assert properties.resolve_stream_arn(cfg(worker__table="Invoices"), describe=describe) == ARN
    assert seen == ["Invoices"]

    def broken(table: str) -> str:
        raise RuntimeError("no such table")

    with pytest.raises(ConfigError, match=r"kcl\.stream_arn.*Invoices.*no such table"):
        properties.resolve_stream_arn(cfg(worker__table="Invoices"), describe=broken)


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
        max_size=6,
    )
)
def test_properties_text_round_trips(props: dict[str, str]) -> None:
    text = properties.dumps(props)
    text.encode("latin-1")  # what java.util.Properties reads
    assert properties.loads(text) == props


def test_kcl_section_validation() -> None:
    with pytest.raises(ConfigError, match=r"kcl\.http_port"):
        cfg(kcl__http_port="70000")
    with pytest.raises(ConfigError, match=r"kcl\.application_name"):
        cfg(kcl__application_name='"a b"')
    with pytest.raises(ConfigError, match=r"kcl\.properties\.X"):
        config.load(None, env={"WORKER__KCL__PROPERTIES__X": "[1]"})


# -- launcher command ---------------------------------------------------------------------------


def test_launcher_command_defaults_and_environment() -> None:
    assert LauncherCommand.from_env({}).argv("/tmp/k.properties") == [
        "java",
        "-cp",
        f"{DEFAULT_CLASSPATH_DIR}/*",
        DEFAULT_MAIN_CLASS,
        "/tmp/k.properties",
    ]
    env = {
        "WORKER_KCL_JAVA": "/opt/java/bin/java",
        "WORKER_KCL_JAVA_OPTS": "-Xmx512m '-Dlogback.configurationFile=/etc/x y.xml'",
        "WORKER_KCL_CLASSPATH_DIR": "/jars",
        "WORKER_KCL_MAIN_CLASS": "x.Main",
    }
    assert LauncherCommand.from_env(env).argv("k.properties") == [
        "/opt/java/bin/java",
        "-Xmx512m",
        "-Dlogback.configurationFile=/etc/x y.xml",
        "-cp",
        "/jars/*",
        "x.Main",
        "k.properties",
    ]


# -- metrics files ------------------------------------------------------------------------------


BOUNDS = ("0.005", "0.01", "0.1", "0.25", "0.5", "60.0", "+Inf")


class FakeStats:
    """Stands in for worker.pipeline.Stats (the fields the metrics file copies)."""

    def __init__(self, records: int, **changes: int) -> None:
        self.records = records
        self.changes = Counter(changes)
        self.retries = 1
        self.deadletters = 2
        self.flushes = 3
        self.sink_seconds = Counter({"aggregates": 0.5})
        # 3 flushes: 0.004 s, 0.2 s and 0.296 s (buckets <= 0.005, <= 0.25 and <= 0.5)
        self.sink_buckets = {"aggregates": [1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]}
        self.unflushed_age = {"aggregates": 0.25, "archive": 42.0}


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def shard_file(directory: Path, shard: str, pid: int, clock: Clock) -> metrics.ShardMetricsFile:
    return metrics.ShardMetricsFile(directory, shard, pid=pid, clock=clock)


def test_shard_file_is_replaced_atomically_and_readable(tmp_path: Path) -> None:
    clock = Clock()
    f = shard_file(tmp_path, "shardId-1", 10, clock)
    f.batch_started(clock.t - 30)
    assert orjson.loads(f.path.read_bytes())["batch_oldest_created"] == clock.t - 30
    clock.t += 2
    f.checkpointed("4200000000000000000001", clock.t - 20)
    f.batch_done(FakeStats(5, insert=5), newest_created=clock.t - 20)
    snap = orjson.loads(f.path.read_bytes())
    assert snap["iterator_age"] == 20 and snap["batch_started"] is None and snap["records"] == 5
    assert snap["checkpoint"] == {"sequence": "4200000000000000000001", "at": clock.t, "created": clock.t - 20}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shardId-1.10.json"]  # no temporary left behind


def test_collector_keeps_totals_monotonic_as_processes_end(tmp_path: Path) -> None:
    clock = Clock()
    alive = {10, 11}
    collector = metrics.Collector(tmp_path, clock=clock, alive=lambda pid: pid in alive)
    a = shard_file(tmp_path, "shardId-a", 10, clock)
    b = shard_file(tmp_path, "shardId-b", 11, clock)
    a.batch_done(FakeStats(5, insert=5), newest_created=clock.t - 4)
    b.batch_done(FakeStats(7, modify=7), newest_created=clock.t - 60)
    snap = collector.collect()
    assert snap.totals.counts["records"] == 12 and [s.shard for s in snap.shards] == ["shardId-a", "shardId-b"]

    a.close(FakeStats(6, insert=6))  # shard a ended cleanly
    alive.discard(11)  # the process of shard b died without closing
    snap = collector.collect()
    assert snap.shards == [] and snap.retired_processes == 2
    assert snap.totals.counts["records"] == 13 and snap.totals.changes == Counter(insert=6, modify=7)
    assert list(tmp_path.iterdir()) == []  # retired files are removed, their counts kept

    c = shard_file(tmp_path, "shardId-c", 12, clock)  # a child shard starts
    alive.add(12)
    c.batch_done(FakeStats(1, insert=1), newest_created=clock.t)
    assert collector.collect().totals.counts["records"] == 14


def test_trim_seconds_left_uses_the_batch_in_flight(tmp_path: Path) -> None:
    clock = Clock()
    collector = metrics.Collector(tmp_path, clock=clock, alive=lambda pid: True)
    f = shard_file(tmp_path, "shardId-a", 10, clock)
    f.batch_done(FakeStats(1), newest_created=clock.t - 3600)
    (view,) = collector.collect().shards
    assert view.iterator_age == 3600 and view.trim_seconds_left == 23 * 3600 and view.in_flight_seconds == 0
    f.batch_started(clock.t - 6 * 3600)  # a backlog: the next batch starts 6 h back
    clock.t += 600
    (view,) = collector.collect().shards
    assert view.trim_seconds_left == pytest.approx((24 - 6) * 3600 - 600)
    assert view.in_flight_seconds == 600


def test_exposition_parses_and_names_every_metric(tmp_path: Path) -> None:
    clock = Clock()
    collector = metrics.Collector(tmp_path, clock=clock, alive=lambda pid: True)
    f = shard_file(tmp_path, "shardId-a", 10, clock)
    f.checkpointed("42", clock.t - 5)
    f.batch_done(FakeStats(5, insert=3, noop=2), newest_created=clock.t - 5)
    text = metrics.render(collector.collect(), launcher_up=True).decode()
    got: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    shard = (("shard", "shardId-a"),)
    assert got[("worker_records_processed_total", ())] == 5
    assert got[("worker_changes_total", (("kind", "insert"),))] == 3
    assert got[("worker_changes_total", (("kind", "noop"),))] == 2
    assert got[("worker_retries_total", ())] == 1
    assert got[("worker_deadletters_total", ())] == 2
    assert got[("worker_checkpoints_total", ())] == 1
    assert got[("worker_sink_flush_seconds_sum", (("sink", "aggregates"),))] == 0.5
    assert got[("worker_sink_flush_seconds_count", (("sink", "aggregates"),))] == 3
    bucket = {b: got[("worker_sink_flush_seconds_bucket", (("le", b), ("sink", "aggregates")))] for b in BOUNDS}
    assert bucket == {"0.005": 1, "0.01": 1, "0.1": 1, "0.25": 2, "0.5": 3, "60.0": 3, "+Inf": 3}
    assert got[("worker_iterator_age_seconds", shard)] == 5
    assert got[("worker_trim_seconds_left", shard)] == pytest.approx(24 * 3600 - 5)
    assert got[("worker_last_checkpoint_timestamp_seconds", shard)] == clock.t
    assert got[("worker_last_checkpoint_record_timestamp_seconds", shard)] == clock.t - 5
    assert got[("worker_launcher_up", ())] == 1
    from importlib.metadata import version

    assert got[("worker_build_info", (("python", platform.python_version()), ("version", version("worker"))))] == 1
    assert got[("process_resident_memory_bytes", ())] > 0  # the daemon's own process
    assert ("python_info", ()) in {(n, ()) for n, _ in got}
    assert any(name.startswith("python_gc_") for name, _ in got)
    assert got[("worker_shard_processes", ())] == 1
    assert got[("worker_sink_unflushed_age_seconds", (*shard, ("sink", "archive")))] == 42.0
    assert got[("worker_sink_unflushed_age_seconds", (*shard, ("sink", "aggregates")))] == 0.25


def test_health_and_readiness(tmp_path: Path) -> None:
    clock = Clock()
    collector = metrics.Collector(tmp_path, clock=clock, alive=lambda pid: True)
    f = shard_file(tmp_path, "shardId-a", 10, clock)
    f.checkpointed("4200000000000000000001", clock.t)
    f.batch_started(clock.t)
    healthy, ready, body = metrics.status(collector.collect(), launcher_up=True, stall_seconds=60)
    assert (healthy, ready) == (True, True)
    assert body["shards"]["shardId-a"]["checkpoint"] == "4200000000000000000001"
    clock.t += 61  # the batch is stuck (a sink retrying for a minute)
    healthy, ready, body = metrics.status(collector.collect(), launcher_up=True, stall_seconds=60)
    assert (healthy, ready, body["stalled"]) == (True, False, ["shardId-a"])
    healthy, ready, _ = metrics.status(collector.collect(), launcher_up=False, stall_seconds=60)
    assert (healthy, ready) == (False, False)


def test_unreadable_or_foreign_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_bytes(b"{not json")
    (tmp_path / "other.json").write_bytes(b"[1, 2]")
    (tmp_path / ".shardId-a.10.json.tmp").write_bytes(b"{}")
    snap = metrics.Collector(tmp_path, alive=lambda pid: True).collect()
    assert snap.shards == [] and snap.totals.counts["records"] == 0


def test_pid_alive() -> None:
    assert metrics.pid_alive(os.getpid())
    assert not metrics.pid_alive(0)
    assert not metrics.pid_alive(2**22 + 12345)  # above Linux's pid_max


def test_worker_metrics_switch_and_command_line_overrides() -> None:
    props = properties.render(
        cfg(kcl__disable_worker_metrics="true", kcl__properties__metricsLevel='"SUMMARY"'),
        stream_arn=ARN,
        config_path=None,
        overrides={"metricslevel": "DETAILED", "failoverTimeMillis": "3000"},
    )
    assert props["disableWorkerMetrics"] == "true"
    assert props["metricslevel"] == "DETAILED"  # the command line wins over [kcl] properties
    assert props["failoverTimeMillis"] == "3000"


def test_emf_document_sends_counter_increases_and_worst_gauges(tmp_path: Path) -> None:
    import io

    from worker.metrics_emf import EmfWriter

    clock = Clock()
    collector = metrics.Collector(tmp_path, clock=clock, alive=lambda pid: True)
    a = shard_file(tmp_path, "shardId-a", 10, clock)
    b = shard_file(tmp_path, "shardId-b", 11, clock)
    a.batch_done(FakeStats(5, insert=5), newest_created=clock.t - 10)
    b.batch_done(FakeStats(7, insert=7), newest_created=clock.t - 100)
    out = io.StringIO()
    writer = EmfWriter(
        collector,
        out,
        launcher_up=lambda: True,
        namespace="Worker",
        application="worker-Orders",
        interval=60,
        clock=clock,
    )
    writer.emit()
    a.batch_done(FakeStats(8, insert=8), newest_created=clock.t - 1)
    writer.emit()
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    (directive,) = first["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Worker" and directive["Dimensions"] == [["Application"]]
    declared = {m["Name"] for m in directive["Metrics"]}
    assert declared <= set(first) and "MinTrimSecondsLeft" in declared
    assert first["Application"] == "worker-Orders" and first["_aws"]["Timestamp"] == int(clock.t * 1000)
    assert (first["RecordsProcessed"], second["RecordsProcessed"]) == (12, 3)  # increases, CloudWatch sums them
    assert first["MaxIteratorAgeSeconds"] == 100 and first["MinTrimSecondsLeft"] == 24 * 3600 - 100
    assert first["LauncherUp"] == 1 and first["ShardProcesses"] == 2
