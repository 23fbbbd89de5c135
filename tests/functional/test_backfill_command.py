"""``worker backfill`` through the CLI on moto and osmem-server: summary, progress lines,
a second run doing nothing, a dry run, refusals naming what is wrong."""

from __future__ import annotations

import json
import random

import pytest

from tests.functional.archive_helpers import restore_logging  # noqa: F401 (a fixture)
from tests.functional.backfill_helpers import assert_sinks_equal_table, create_source, random_item, write_config
from worker import cli, config
from worker.app import build_pipeline

pytestmark = pytest.mark.usefixtures("restore_logging")


def backfill(capsys, *args):
    rc = cli.main(["backfill", *args])
    out, err = capsys.readouterr()
    return rc, out.strip().splitlines()[-1] if out.strip() else "", err


def test_backfill_fills_every_sink_once_and_a_second_run_does_nothing(moto_url, osmem_url, tmp_path, capsys):
    path = write_config(tmp_path / "w.toml", moto_url, osmem_url, tmp_path)
    cfg = config.load(path, env={})
    rng = random.Random(7)
    create_source(cfg, [random_item(rng, f"o-{i:04d}") for i in range(60)])
    build_pipeline(cfg, provision=True).close()  # production targets exist before a backfill

    rc, out, err = backfill(capsys, "--config", str(path), "--dry-run", "--json")
    assert rc == 0, err
    dry = json.loads(out)
    assert dry["items_estimate"] == 60 and dry["state"] == "none" and dry["rcu_estimate"] > 0

    rc, out, err = backfill(capsys, "--config", str(path), "--segments", "3", "--page-items", "9", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["complete"] and summary["scanned"] == 60 and summary["snapshot_records"] == 60
    assert summary["changed_during_scan"] == 0 and summary["consumed_rcu"] > 0 and summary["deadletters"] == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    progress = [line for line in lines if line.get("event") == "backfill progress"]
    assert progress and progress[-1]["phase"] == "done" and progress[-1]["scanned"] == 60
    assert_sinks_equal_table(cfg)

    rc, out, err = backfill(capsys, "--config", str(path), "--json")
    assert rc == 0, err
    again = json.loads(out)
    assert again["already_done"] and again["scanned"] == 60
    assert_sinks_equal_table(cfg)


def test_refusals_name_what_is_wrong(moto_url, osmem_url, tmp_path, capsys):
    path = write_config(tmp_path / "w.toml", moto_url, osmem_url, tmp_path)
    cfg = config.load(path, env={})
    create_source(cfg, [random_item(random.Random(1), "o-1")], stream=False)
    rc, _, err = backfill(capsys, "--config", str(path))
    assert rc == 1 and "has no stream enabled" in err and "Traceback" not in err

    rc, _, err = backfill(capsys, "--config", str(path), "--segments", "0")
    assert rc == 2 and "--segments" in err

    latest = tmp_path / "latest.toml"
    latest.write_text(path.read_text() + '\n[kcl]\ninitial_position = "LATEST"\n')
    rc, _, err = backfill(capsys, "--config", str(latest))
    assert rc == 2 and "kcl.initial_position" in err


def test_an_interrupted_backfill_is_refused_without_resume_and_finished_with_it(moto_url, osmem_url, tmp_path, capsys):
    from worker.aws import client
    from worker.sources.backfill import Backfill, ScanOptions

    path = write_config(tmp_path / "w.toml", moto_url, osmem_url, tmp_path)
    cfg = config.load(path, env={})
    rng = random.Random(8)
    create_source(cfg, [random_item(rng, f"o-{i:04d}") for i in range(60)])
    build_pipeline(cfg, provision=True).close()
    # A first run that got through two pages of one segment, then died.
    state = tmp_path / "state" / "backfill"
    first = Backfill(client(cfg, "dynamodb"), client(cfg, "dynamodbstreams"), "Orders", state, ScanOptions(2, 10))
    first.start()
    assert first.scan_page(0) and first.scan_page(0)

    rc, _, err = backfill(capsys, "--config", str(path), "--segments", "2")
    assert rc == 1 and "--resume" in err and "in progress" in err

    rc, out, err = backfill(capsys, "--config", str(path), "--segments", "2", "--resume", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["complete"] and summary["scanned"] == 60 and summary["snapshot_records"] == 60
    assert_sinks_equal_table(cfg)


def test_the_progress_bar_on_a_terminal_shows_counts_and_an_eta():
    import io

    from worker.commands.backfill import ProgressReport
    from worker.sources.backfill_state import Progress, SegmentProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    out = Tty()
    bar = ProgressReport(out, 100, clock=lambda: now[0])
    progress = Progress({}, [SegmentProgress(items=25), SegmentProgress(items=15)], consumed_rcu=12.0)
    now[0] = 4.0  # 40 items in 4 s: 60 left, 6 s
    bar.update(progress)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rscanning") and "40/100 items" in text and "10/s" in text and "ETA 0:06" in text
    assert "RCU 12" in text and text.endswith("\n")
