"""Replaying dead letters (`worker local --fixtures <dead letters>`) applies each record only
where it was not applied before: no sink counts it twice, however often it is replayed.

State lives on one moto and one osmem-server across the runs (endpoints configured), as it
does for a user replaying into their real targets.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.poison.cases import nested, order, record
from tests.worker_cli import run_worker

ROOT = Path(__file__).resolve().parents[2]


def config(tmp: Path, moto: str, osmem: str, dead: Path) -> Path:
    path = tmp / f"replay-{dead.name}.toml"
    path.write_text(
        f"""
[worker]
table = "Orders"
log_format = "json"
log_level = "warning"
[aws]
endpoint_url = "{moto}"
[deadletter]
url = "{dead}"
[[aggregates]]
name = "orders_by_status"
table = "OrderStats"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}
[search]
url = "{osmem}"
index = "orders"
[archive]
bucket = "orders-archive"
prefix = "changes/"
"""
    )
    return path


def local(cfg: Path, *fixtures: Path) -> dict:
    run = run_worker("local", "--config", str(cfg), "--json", "--fixtures", *map(str, fixtures))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def lines(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def dead_letters(directory: Path) -> list[dict]:
    return [json.loads(x) for f in sorted(directory.rglob("*.jsonl")) for x in f.read_text().splitlines()]


def test_a_replayed_dead_letter_reaches_only_the_sinks_that_parked_it_and_only_once(
    tmp_path: Path, moto_url: str, osmem_url: str
) -> None:
    shard = "shardId-00000001700000000000-aaaaaaaa"
    paid = order("o-1", "paid", "web", "Paris", {"N": "10.5"})
    # Aggregates count it; the index refuses its depth (the 2 orders / 21 case); the archive
    # keeps it (written by the standard library where orjson stops at 255 levels).
    deep = order("o-2", "paid", "web", "Paris", {"N": "10.5"}, deep=nested(130))
    big1 = order("o-3", "big", "web", "Paris", {"N": "9.9E+125"})
    big2 = order("o-4", "big", "web", "Paris", {"N": "9.9E+125"})  # the sum cannot absorb it: aggregates park it
    first = lines(
        tmp_path / "first.jsonl",
        *(
            {"shard_id": shard, "record": r}  # archive lines: records of a real shard
            for r in (
                record(101, "INSERT", "o-1", new=paid),
                record(102, "INSERT", "o-2", new=deep),
                record(103, "INSERT", "o-3", new=big1),
                record(104, "INSERT", "o-4", new=big2),
            )
        ),
    )
    dead = tmp_path / "dead1"
    report = local(config(tmp_path, moto_url, osmem_url, dead), first)
    by_status = {r["group"]["status"]: r["metrics"] for r in report["aggregates"]["orders_by_status"]}
    assert by_status == {"paid": {"orders": 2, "revenue": "21"}, "big": {"orders": 1, "revenue": "99" + "0" * 124}}
    parked = dead_letters(dead)
    assert sorted((p["sequence_number"], p["sink"]) for p in parked) == [
        ("102", "search"),
        ("103", "search"),  # the index maps total as float: 9.9e125 is out of its range
        ("104", "aggregates"),
        ("104", "search"),
    ]
    assert {p["shard_id"] for p in parked} == {shard}

    # The row that could not absorb o-4 empties; now its replay fits.
    local(
        config(tmp_path, moto_url, osmem_url, tmp_path / "dead2"),
        lines(tmp_path / "second.jsonl", {"shard_id": shard, "record": record(105, "REMOVE", "o-3", old=big1)}),
    )

    files = sorted(dead.rglob("*.jsonl"))
    for attempt in (3, 4):  # replayed twice: the second replay changes nothing
        out = tmp_path / f"dead{attempt}"
        report = local(config(tmp_path, moto_url, osmem_url, out), *files)
        by_status = {r["group"]["status"]: r["metrics"] for r in report["aggregates"]["orders_by_status"]}
        assert by_status == {"paid": {"orders": 2, "revenue": "21"}, "big": {"orders": 1, "revenue": "99" + "0" * 124}}
        # What still fails is parked again, for the same sinks only; o-3's index entry is
        # stale now (its REMOVE, 105, is newer than 103), so the index skips it.
        assert sorted((p["sequence_number"], p["sink"]) for p in dead_letters(out)) == [
            ("102", "search"),
            ("104", "search"),
        ]
    docs = report["search"]["orders"]
    assert sorted(d["order_id"] for d in docs.values()) == ["o-1"]
