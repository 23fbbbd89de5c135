"""Replays into the real sinks (aggregates on moto DynamoDB, search on osmem-server), through the CLI.

Live processing, with a crash and a redelivery on other batch boundaries, fills the
aggregates, the index and the archive; a replay of the archive into fresh targets must
give the same aggregates and the same index; a second replay changes nothing; a rebuild
into an empty table gives the same aggregates and refuses a table that is not empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.functional.archive_helpers import CHILD, OTHER, PARENT, T0, restore_logging, stream  # noqa: F401 (a fixture)
from worker import cli, config
from worker.app import build_pipeline
from worker.sinks import aggregates, search

UTC_RANGE = ["--since", "2025-11-21", "--until", "2025-11-24"]


pytestmark = pytest.mark.usefixtures("restore_logging")


def write_config(path: Path, moto: str, osmem: str, *, table: str, index: str, tmp: Path) -> Path:
    path.write_text(
        f"""
[worker]
table = "Orders"
log_format = "json"
log_level = "warning"
data_dir = "{tmp / "state"}"
[aws]
endpoint_url = "{moto}"
[pipeline]
retry_base_seconds = 0.0
retry_max_seconds = 0.0
[deadletter]
url = "{tmp / "dead"}"
[[aggregates]]
name = "orders_by_status"
table = "{table}"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}
[search]
url = "{osmem}"
index = "{index}"
[archive]
bucket = "archive"
prefix = "changes/"
max_records = 30
"""
    )
    return path


def live_run(cfg: config.Config) -> None:
    # An item lives in one shard lineage: the child continues its parent's items.
    data = {
        PARENT: stream(120, shard=PARENT, start=T0 + 3000, per_second=0.1, seed=11, keys=15, key_prefix="p-"),
        OTHER: stream(60, shard=OTHER, first_seq=48_000_000_000_000_000_000_000, seed=12, keys=15, key_prefix="o-"),
        CHILD: stream(
            60,
            shard=CHILD,
            first_seq=50_000_000_000_000_000_000_000,
            start=T0 + 5000,
            seed=13,
            keys=15,
            key_prefix="p-",
        ),
    }
    p = build_pipeline(cfg, provision=True)
    for shard in (PARENT, OTHER, CHILD):
        recs = data[shard]
        for i in range(0, len(recs), 25):
            p.process(recs[i : i + 25])
        # A crash before the last checkpoints: a new process redelivers the tail on other boundaries.
        p.close()
        p = build_pipeline(cfg, provision=True)
        tail = recs[len(recs) // 2 :]
        for i in range(0, len(tail), 9):
            p.process(tail[i : i + 9])
    p.close()


def reports(cfg: config.Config):
    agg = aggregates.create(cfg).report()
    idx = search.create(cfg).report()
    return agg, next(iter(idx.values()))


def replay(*argv: str, capsys) -> tuple[int, dict, str]:
    capsys.readouterr()  # drop what earlier steps printed
    rc = cli.main(["replay", *argv])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.startswith("{") else {}), out.err


def test_replay_into_fresh_sinks_equals_live_processing_and_twice_changes_nothing(
    moto_url, osmem_url, tmp_path, capsys
):
    live_cfg = config.load(
        write_config(tmp_path / "live.toml", moto_url, osmem_url, table="LiveStats", index="live", tmp=tmp_path)
    )
    live_run(live_cfg)
    live_aggs, live_docs = reports(live_cfg)
    assert live_aggs["orders_by_status"] and len(live_docs) > 10

    path = write_config(
        tmp_path / "replay.toml", moto_url, osmem_url, table="ReplayStats", index="replayed", tmp=tmp_path
    )
    rc, summary, err = replay("--config", str(path), *UTC_RANGE, "--provision", "--json", capsys=capsys)
    assert rc == 0, err
    assert summary["sinks"] == ["aggregates", "search"] and summary["records"]["replayed"] == 240
    assert summary["records"]["duplicates"] > 0 and summary["parked"] == 0
    replay_cfg = config.load(path)
    assert reports(replay_cfg) == (live_aggs, live_docs)

    # Again: the sinks' idempotence makes it a no-op.
    rc, summary, err = replay("--config", str(path), *UTC_RANGE, "--json", capsys=capsys)
    assert rc == 0, err and summary["records"]["replayed"] == 240
    assert reports(replay_cfg) == (live_aggs, live_docs)


def test_rebuild_into_an_empty_table_and_refuse_a_full_one(moto_url, osmem_url, tmp_path, capsys):
    live_cfg = config.load(
        write_config(tmp_path / "live.toml", moto_url, osmem_url, table="LiveStats", index="live", tmp=tmp_path)
    )
    live_run(live_cfg)
    live_aggs = aggregates.create(live_cfg).report()

    path = tmp_path / "live.toml"
    rc, _, err = replay("--config", str(path), "--rebuild", "orders_by_status", capsys=capsys)
    assert rc == 1 and "'LiveStats' is not empty" in err

    rc, summary, err = replay(
        "--config", str(path), "--rebuild", "all", "--into", "RebuiltStats", "--json", capsys=capsys
    )
    assert rc == 0, err
    assert summary["rebuild"] == ["orders_by_status"] and summary["sinks"] == ["aggregates"]
    assert summary["records"]["replayed"] == 240
    rebuilt = aggregates.create(config.load(path, env={"WORKER__AGGREGATES__0__TABLE": "RebuiltStats"})).report()
    assert rebuilt == live_aggs

    # Once filled, the rebuilt table is refused too (a second rebuild would double count).
    rc, _, err = replay("--config", str(path), "--rebuild", "all", "--into", "RebuiltStats", capsys=capsys)
    assert rc == 1 and "'RebuiltStats' is not empty" in err
