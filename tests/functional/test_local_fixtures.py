"""`worker local` and `worker fixtures` through the real CLI, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "config" / "fixtures" / "orders.jsonl"


def worker(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def deadletter_only(tmp_path: Path) -> Path:
    cfg = tmp_path / "dl.toml"
    cfg.write_text(f'[deadletter]\nurl = "{tmp_path / "dead"}"\n[worker]\nlog_format = "json"\n')
    return cfg


def test_every_shape_gives_the_same_counts(tmp_path: Path, deadletter_only: Path) -> None:
    reports = {}
    for shape in ("wire", "adapter", "multilang", "lambda", "cli"):
        out = tmp_path / f"orders.{shape}"
        conv = worker("fixtures", "convert", str(BUNDLED), "--to", shape, "--out", str(out))
        assert conv.returncode == 0, conv.stderr
        run = worker("local", "--config", str(deadletter_only), "--fixtures", str(out), "--json")
        assert run.returncode == 0, run.stderr
        reports[shape] = json.loads(run.stdout)
    first = reports["wire"]
    assert first["records"] == sum(first["kinds"].values()) > 50
    assert first["deadletters"] == 0
    for shape, report in reports.items():
        assert {k: report[k] for k in ("records", "kinds", "changes")} == {
            k: first[k] for k in ("records", "kinds", "changes")
        }, shape


def test_malformed_fixture_lines_are_parked_with_file_and_line(tmp_path: Path, deadletter_only: Path) -> None:
    lines = BUNDLED.read_text().splitlines()[:3]
    bad = json.loads(lines[1])
    bad["dynamodb"]["NewImage"]["total"] = {"N": "twelve"}
    broken = json.loads(lines[2])
    broken["eventName"] = "UPSERT"
    fixture = tmp_path / "bad.jsonl"
    fixture.write_text("\n".join([lines[0], json.dumps(bad), "{not json", json.dumps(broken)]) + "\n")
    run = worker("local", "--config", str(deadletter_only), "--fixtures", str(fixture), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["records"] == 4
    # Without sinks nothing reads `total`, so only the two envelope errors are parked.
    assert report["deadletters"] == 2
    parked = [json.loads(x) for f in (tmp_path / "dead").rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert sorted(p["where"] for p in parked) == [f"{fixture}:3", f"{fixture}:4"]
    by_where = {p["where"]: p for p in parked}
    assert "invalid JSON" in by_where[f"{fixture}:3"]["error"]
    assert by_where[f"{fixture}:4"]["field"] == "eventName"
    assert by_where[f"{fixture}:4"]["record"]["eventName"] == "UPSERT"  # the full record is kept
    assert f"{fixture}:3" in run.stderr  # and the log says where


def test_record_fixtures_from_a_live_stream(moto_url: str, tmp_path: Path) -> None:
    import boto3

    from worker import examples

    ddb = boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1")
    examples.create_table(ddb, "Shop")
    res = boto3.resource("dynamodb", endpoint_url=moto_url, region_name="us-east-1")
    examples.run(res, "Shop", orders=10, seed=3)
    out = tmp_path / "rec.jsonl"
    run = worker("fixtures", "record", "--table", "Shop", "--out", str(out), "--endpoint-url", moto_url)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 10 + 7 + 3 + 2 + 1  # inserts, paid, shipped, edited, cancelled
    assert {rec["eventName"] for rec in lines} == {"INSERT", "MODIFY", "REMOVE"}
    assert all(isinstance(rec["dynamodb"]["ApproximateCreationDateTime"], float) for rec in lines)


def test_bad_configuration_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[pipeline]\nmax_batch_records = -1\n")
    run = worker("check-config", str(cfg))
    assert run.returncode == 2
    assert "pipeline.max_batch_records" in run.stderr
