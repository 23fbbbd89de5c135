"""The poison-record corpus (tests/poison) through `worker local`, every sink, as a user runs it.

The run must end with exit 0; the good records' effect must be exact (expected values
written by hand from the corpus); each bad record must be parked once per sink that refused
it (per :mod:`tests.poison.cases`), and never stop the run.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections import Counter
from pathlib import Path

from tests.poison.cases import CORPUS, DECODE, cases, render
from tests.worker_cli import run_worker

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[worker]
table = "Orders"
region = "us-east-1"
log_format = "json"
log_level = "warning"

[deadletter]
url = "{dead}"

[[aggregates]]
name = "orders_by_status"
table = "OrderStats"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}

[[aggregates]]
name = "web_orders_by_city"
table = "OrderStats"
group_by = ["ship.city"]
where = {{ channel = "web" }}
metrics = {{ orders = "count", revenue = "sum(total)" }}

[search]
index = "orders"

[archive]
bucket = "orders-archive"
prefix = "changes/"
"""


def run_local(tmp_path: Path, *fixtures: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    dead = tmp_path / "dead"
    cfg = tmp_path / "poison.toml"
    cfg.write_text(CONFIG.format(dead=dead))
    run = run_worker("local", "--config", str(cfg), "--json", "--fixtures", *map(str, fixtures))
    parked = [json.loads(x) for f in sorted(dead.rglob("*.jsonl")) for x in f.read_text().splitlines()]
    return run, parked


def test_the_committed_corpus_is_current() -> None:
    assert CORPUS.read_bytes() == render(), "run: python -m tests.poison.cases"


def test_poison_records_are_parked_once_per_refusing_sink_and_the_good_ones_are_exact(tmp_path: Path) -> None:
    run, parked = run_local(tmp_path, CORPUS)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)
    corpus = cases()
    assert report["records"] == len(corpus)

    # Each bad record parked exactly once per sink that refused it; good ones never.
    expected = Counter()
    for lineno, case in enumerate(corpus, start=1):
        for sink in case.parked_by:
            expected[(f"{CORPUS}:{lineno}", None if sink == DECODE else sink)] += 1
    assert Counter((p["where"], p["sink"]) for p in parked) == expected
    assert report["deadletters"] == sum(expected.values())
    # Every dead letter names its field or error and carries the record (as JSON or as its bytes).
    for p in parked:
        assert p["error"]
        assert p["record"] is not None or base64.b64decode(p["record_base64"])

    # The good records, exactly (by hand: o-1, o-2, o-3 paid at 10.5 + 10.5 + 7, and o-b11, o-b12 at 1 each,
    # whose bad attributes are not ones aggregates read; o-4 inserted and removed;
    # "big" keeps its first 9.9e125, "wide" its 38 nines, "deep" 1 and "text" 1 order adding 0).
    by_status = {r["group"]["status"]: r["metrics"] for r in report["aggregates"]["orders_by_status"]}
    assert by_status == {
        "paid": {"orders": 5, "revenue": "30"},
        "big": {"orders": 1, "revenue": "99" + "0" * 124},
        "wide": {"orders": 1, "revenue": "9" * 38},
        "deep": {"orders": 1, "revenue": "1"},
        "text": {"orders": 1, "revenue": "0"},
    }
    by_city = {r["group"]["ship.city"]: r["metrics"] for r in report["aggregates"]["web_orders_by_city"]}
    assert by_city == {"Paris": {"orders": 2, "revenue": "17.5"}}

    docs = report["search"]["orders"]
    assert sorted(d["order_id"] for d in docs.values()) == [
        "o-1",
        "o-2",
        "o-3",
        "o-b10",
        "o-b13",
        "w-1",
        "w-2",
    ]
    # The archive holds every record that decoded, the deep one included.
    decoded = [c for c in corpus if DECODE not in c.parked_by]
    assert report["archive"]["records"] == len(decoded)


def test_a_lambda_console_style_test_event_is_processed_not_parked(tmp_path: Path) -> None:
    # Our own event in the Lambda console's shape: no ApproximateCreationDateTime, sequence
    # numbers "111".."333", eventSourceARN values that are a placeholder stream ARN, text, a table ARN.
    run, parked = run_local(tmp_path, CORPUS.parent / "lambda_console_event.json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["records"], report["deadletters"], parked) == (3, 0, [])
    by_status = {r["group"]["status"]: r["metrics"] for r in report["aggregates"]["orders_by_status"]}
    assert by_status == {"shipped": {"orders": 1, "revenue": "4.25"}, "paid": {"orders": 1, "revenue": "1"}}
    assert sorted(d["order_id"] for d in report["search"]["orders"].values()) == ["c-1", "c-2"]
    assert report["archive"]["records"] == 3
