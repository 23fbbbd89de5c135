"""``worker replay`` against moto S3: once, in order, parents first, range, damage, resume, dry run."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gzip
import io
import json
from pathlib import Path

import orjson
import pytest

from tests.functional.archive_helpers import (  # noqa: F401 (a fixture)
    CHILD,
    OTHER,
    PARENT,
    T0,
    make_cfg,
    restore_logging,
    s3_client,
    seq_of,
    stream,
)
from worker import archive, cli
from worker.commands import replay
from worker.decode import decode
from worker.pipeline import Pipeline
from worker.retry import RetryPolicy, no_sleep
from worker.shapes import canonical
from worker.sinks import archive as sink_mod
from worker.sources.replay import Options
from worker.testing import MemoryDeadLetters, MemorySink

UTC = dt.UTC


pytestmark = pytest.mark.usefixtures("restore_logging")


def live(url, data, *, redeliver=True, max_records=25):
    """Archive ``data`` ({shard: records}) as the live worker would, with a redelivery after a crash."""
    cfg = make_cfg(url, max_records=max_records)
    s3 = s3_client(url)
    s3.create_bucket(Bucket="archive")
    for shard in (PARENT, OTHER, CHILD):
        recs = data.get(shard, [])
        p = Pipeline([sink_mod.build(cfg, s3=s3)], MemoryDeadLetters())
        for i in range(0, len(recs), 20):
            p.process(recs[i : i + 20])
        if redeliver and recs:  # a crash before the last checkpoints: redelivered with other boundaries
            p = Pipeline([sink_mod.build(cfg, s3=s3)], MemoryDeadLetters())
            back = recs[len(recs) // 3 :]
            for i in range(0, len(back), 7):
                p.process(back[i : i + 7])
    return cfg


def opts(**kw):
    base = {
        "bucket": "archive",
        "prefix": "changes/",
        "since": dt.datetime.fromtimestamp(T0 - 86400, UTC),
        "until": dt.datetime.fromtimestamp(T0 + 86400, UTC),
        "tables": ("Orders",),
        "sinks": ("memory",),
        "prefetch": 3,
    }
    base.update(kw)
    return Options(**base)


def memory_pipeline():
    sink, dl = MemorySink("memory"), MemoryDeadLetters()
    return Pipeline([sink], dl, retry=RetryPolicy(attempts=2, sleep=no_sleep)), sink, dl


def three_shards():
    return {
        PARENT: stream(90, shard=PARENT, start=T0 + 3000, per_second=0.05, seed=1),  # spans hours
        OTHER: stream(40, shard=OTHER, first_seq=48_000_000_000_000_000_000_000, seed=2),
        CHILD: stream(50, shard=CHILD, first_seq=50_000_000_000_000_000_000_000, start=T0 + 9000, seed=3),
    }


def test_every_record_once_in_sequence_order_parents_before_children(moto_url, tmp_path):
    data = three_shards()
    cfg = live(moto_url, data)
    n_objects = len(archive.list_all(s3_client(moto_url), "archive", "changes/"))
    p, sink, dl = memory_pipeline()
    summary = replay.execute(
        cfg, opts(state=tmp_path / "s.json"), s3=s3_client(moto_url), pipeline=p, err=io.StringIO()
    )
    got = [c.record for c in sink.flushed]
    shards = [r.shard_id for r in got]
    # Whole shards, parents first (shard ids embed creation times; OTHER is as old as PARENT).
    assert shards == [PARENT] * 90 + [OTHER] * 40 + [CHILD] * 50
    for shard, raws in data.items():
        mine = [r for r in got if r.shard_id == shard]
        assert [r.sequence for r in mine] == [seq_of(x) for x in raws]
        assert [canonical(r) for r in mine] == [canonical(decode(x)) for x in raws]
        assert all(r.where.startswith("s3://archive/changes/table=Orders/") for r in mine)
    assert summary.records["replayed"] == 180 and summary.records["duplicates"] > 0
    assert summary.records["read"] == 180 + summary.records["duplicates"]
    assert summary.objects == {"listed": n_objects, "read": n_objects, "skipped": 0}
    assert summary.complete and not dl.parked and summary.parked == 0


def test_only_the_range_is_replayed_and_only_its_hours_are_listed(moto_url, tmp_path):
    data = {PARENT: stream(120, shard=PARENT, start=T0, per_second=1 / 120)}  # 4 hours, 30 records each
    cfg = live(moto_url, data, redeliver=False)
    s3 = s3_client(moto_url)
    hours = {o.name.hour for o in archive.list_all(s3, "archive", "changes/")}
    assert len(hours) == 4
    since = dt.datetime.fromtimestamp(T0 + 3600 + 1800, UTC)  # inside hour 2
    until = dt.datetime.fromtimestamp(T0 + 3 * 3600, UTC)  # hour 4 excluded
    p, sink, _ = memory_pipeline()
    summary = replay.execute(cfg, opts(since=since, until=until, state=None), s3=s3, pipeline=p, err=io.StringIO())
    got = [c.record for c in sink.flushed]
    expected = [seq_of(r) for r in data[PARENT] if since <= decode(r).created_at < until]
    assert [r.sequence for r in got] == expected and len(expected) == 45
    assert summary.records["outside_range"] == 15
    assert all(o for o in archive.list_objects(s3, "archive", "changes/", ["Orders"], since=since, until=until))
    assert summary.objects["listed"] == len(
        [
            o
            for o in archive.list_all(s3, "archive", "changes/")
            if since.replace(minute=0, second=0) <= o.name.hour < until
        ]
    )


def put_raw(s3, key, body):
    s3.put_object(Bucket="archive", Key=key, Body=body)


def damaged_archive(url):
    """A good archive plus a truncated object, a bad JSON line, an undecodable record and a stray key."""
    data = {PARENT: stream(30, shard=PARENT)}
    cfg = live(url, data, redeliver=False, max_records=10)
    s3 = s3_client(url)
    keys = sorted(o.key for o in archive.list_all(s3, "archive", "changes/"))
    # Truncate the second object (in the middle of its gzip stream).
    whole = s3.get_object(Bucket="archive", Key=keys[1])["Body"].read()
    put_raw(s3, keys[1], whole[: len(whole) // 2])
    # A bad JSON line and an undecodable record in the third object (lines 2 and 4).
    lines = gzip.decompress(s3.get_object(Bucket="archive", Key=keys[2])["Body"].read()).splitlines()
    bad = orjson.loads(lines[3])
    bad["record"]["dynamodb"]["Keys"] = "not a map"
    lines[1] = b'{"shard_id": "' + PARENT.encode() + b'", "record": {trunc'
    lines[3] = orjson.dumps(bad)
    put_raw(s3, keys[2], gzip.compress(b"\n".join(lines) + b"\n"))
    put_raw(s3, "changes/table=Orders/dt=2025-11-22/hour=03/README.txt", b"hello")
    return cfg, data, keys


def write_config(tmp_path: Path, url: str, body: str = "") -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        f"""
[worker]
table = "Orders"
log_format = "json"
[aws]
endpoint_url = "{url}"
[pipeline]
retry_base_seconds = 0.0
retry_max_seconds = 0.0
[deadletter]
url = "{tmp_path / "dead"}"
[local]
state_dir = "{tmp_path / "state"}"
[archive]
bucket = "target"
prefix = "copy/"
{body}
"""
    )
    return path


def dead_letters(tmp_path):
    return [json.loads(x) for f in sorted((tmp_path / "dead").rglob("*.jsonl")) for x in f.read_text().splitlines()]


def test_damaged_objects_are_parked_with_key_and_line_and_the_rest_replayed(moto_url, tmp_path, capsys):
    _, _, keys = damaged_archive(moto_url)
    config = write_config(tmp_path, moto_url)
    s3_client(moto_url).create_bucket(Bucket="target")
    argv = ["--from-archive", "s3://archive/changes", "--since", "2025-11-22", "--until", "2025-11-23T00:00:00Z"]
    rc = cli.main(["replay", "--config", str(config), *argv, "--sinks", "archive", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out)
    parked = {d["where"]: d for d in dead_letters(tmp_path)}
    truncated_at = [w for w in parked if w.startswith(f"s3://archive/{keys[1]}:")]
    assert len(truncated_at) == 1 and "gzip" in parked[truncated_at[0]]["error"]
    assert "invalid JSON" in parked[f"s3://archive/{keys[2]}:2"]["error"]
    assert parked[f"s3://archive/{keys[2]}:4"]["field"] == "dynamodb.Keys"
    assert parked[f"s3://archive/{keys[2]}:4"]["record"]["dynamodb"]["Keys"] == "not a map"  # the full record
    assert summary["parked"] == len(parked) == 3
    assert summary["ignored_keys"] == ["changes/table=Orders/dt=2025-11-22/hour=03/README.txt"]
    # The log names each place too.
    for where in parked:
        assert where in out.err
    # Everything else went through the pipeline into the target archive.
    _, copied, errors = archive.read_all(s3_client(moto_url), "target", "copy/")
    lost = 2 + (10 - int(truncated_at[0].rsplit(":", 1)[1]) + 1)
    assert not errors and len(copied) == 30 - lost == summary["records"]["replayed"]


def test_dry_run_reports_damage_but_feeds_and_parks_nothing(moto_url, tmp_path, capsys):
    damaged_archive(moto_url)
    config = write_config(tmp_path, moto_url)
    rc = cli.main(
        [
            "replay",
            "--config",
            str(config),
            "--from-archive",
            "s3://archive/changes/",
            "--since",
            "100000d",
            "--dry-run",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0
    assert "(dry run)" in out.out and "DAMAGED: 3" in out.out and "would be replayed" in out.out
    assert not (tmp_path / "dead").exists() and not (tmp_path / "state").exists()


def test_an_interrupted_replay_resumes_where_it_stopped(moto_url, tmp_path):
    data = three_shards()
    live(moto_url, data)
    s3 = s3_client(moto_url)
    state = tmp_path / "progress.json"
    cfg = make_cfg(moto_url, tmp=tmp_path)
    cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, max_batch_records=30))

    def ctrl_c(n):
        if n == 3:
            raise KeyboardInterrupt  # in the middle of the third flush: its records are not durable

    first, sink1, _ = memory_pipeline()
    sink1.fail = ctrl_c
    with pytest.raises(KeyboardInterrupt):
        replay.execute(cfg, opts(state=state), s3=s3, pipeline=first, err=io.StringIO())
    saved = json.loads(state.read_text())
    assert not saved["complete"] and saved["streams"] and saved["objects"]
    second, sink2, _ = memory_pipeline()
    summary = replay.execute(cfg, opts(state=state, resume=True), s3=s3, pipeline=second, err=io.StringIO())
    a = [(c.record.shard_id, c.record.sequence) for c in sink1.flushed]
    b = [(c.record.shard_id, c.record.sequence) for c in sink2.flushed]
    assert len(a) == 60 and not set(a) & set(b)
    assert sorted(a + b) == sorted((s, seq_of(r)) for s, rs in data.items() for r in rs)
    assert summary.resumed and summary.objects["skipped"] > 0
    assert summary.records["replayed"] == 120 and summary.complete
    assert json.loads(state.read_text())["complete"]
    # A resume of another range is refused instead of mixing progress.
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="another run"):
        replay.execute(cfg, opts(state=state, resume=True, tables=("Other",)), s3=s3, pipeline=memory_pipeline()[0])


def test_progress_is_logged_when_stderr_is_not_a_terminal(moto_url, tmp_path):
    cfg = live(moto_url, {PARENT: stream(40)}, redeliver=False)
    ticks = iter(range(0, 10_000, 20))
    logged = []

    class Log:
        def info(self, event, **kw):
            logged.append((event, kw))

    progress = replay.Progress(io.StringIO(), 1000, 3, clock=lambda: next(ticks), tty=False, log=Log())
    progress.update(10, 500, 1)
    progress.update(20, 1000, 3, force=True)
    assert logged[0][1]["eta_seconds"] == pytest.approx(20.0) and logged[-1][1]["records"] == 20
    assert cfg.archive is not None


def test_no_since_is_an_error_and_bad_times_name_the_flag(tmp_path, moto_url, capsys):
    config = write_config(tmp_path, moto_url)
    assert cli.main(["replay", "--config", str(config), "--sinks", "archive"]) == 2
    assert "--since" in capsys.readouterr().err
    assert cli.main(["replay", "--config", str(config), "--sinks", "archive", "--since", "yesterday"]) == 2
    assert "not a time" in capsys.readouterr().err


def test_options_defaults_and_checks(tmp_path, moto_url):
    from worker import config as config_mod
    from worker.errors import ConfigError

    cfg = config_mod.load(write_config(tmp_path, moto_url, '[search]\nurl = "http://x"\n'))
    parser = cli.parser()

    def parse(*argv):
        args = parser.parse_args(["replay", *argv])
        return replay.options(args, cfg, dt.datetime(2026, 11, 22, 12, tzinfo=UTC))

    o = parse("--since", "6h")
    assert o.sinks == ("search",)  # every configured sink but the archive itself
    assert (o.bucket, o.prefix, o.since.hour, o.until.hour) == ("target", "copy/", 6, 12)
    assert parse("--since=-1d", "--table", "*").tables == ()
    with pytest.raises(ConfigError, match="before"):
        parse("--since", "2026-11-23")
    with pytest.raises(ConfigError, match="only with --rebuild"):
        parse("--since", "1h ago", "--into", "T")
    with pytest.raises(ConfigError, match="no aggregate named"):
        parse("--rebuild", "nope")
    assert isinstance(parser.parse_args(["replay", "--since", "now"]), argparse.Namespace)
