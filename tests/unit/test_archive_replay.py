"""The replay command's pure parts: times, the progress line, the summary, the progress file."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest

from worker.commands import replay
from worker.errors import ConfigError
from worker.sources.replay import State, Summary

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("24h", NOW - dt.timedelta(hours=24)),
        ("-90m", NOW - dt.timedelta(minutes=90)),
        ("7d ago", NOW - dt.timedelta(days=7)),
        ("1.5h", NOW - dt.timedelta(minutes=90)),
        ("2026-11-20", dt.datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T05:30", dt.datetime(2026, 11, 20, 5, 30, tzinfo=UTC)),
        ("2026-11-20T05:30:00Z", dt.datetime(2026, 11, 20, 5, 30, tzinfo=UTC)),
        ("2026-11-20T07:30:00+02:00", dt.datetime(2026, 11, 20, 5, 30, tzinfo=UTC)),
        ("1763780400", dt.datetime(2025, 11, 22, 3, 0, tzinfo=UTC)),
    ],
)
def test_times(text, expected):
    assert replay.parse_time(text, NOW, "--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "24x", "2026-13-01", ""])
def test_bad_times_name_the_flag(text):
    with pytest.raises(ConfigError) as err:
        replay.parse_time(text, NOW, "--until")
    assert err.value.key == "--until"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_records_bytes_and_eta_and_redraws_in_place():
    ticks = iter([0.0, 10.0, 10.05, 20.0, 30.0])
    out = Tty()
    p = replay.Progress(out, 4_000_000, 8, clock=lambda: next(ticks))
    p.update(5000, 1_000_000, 2)  # 10 s for a quarter: 30 s to go
    p.update(6000, 1_100_000, 2)  # 50 ms later: not redrawn (at most 10 per second)
    text = out.getvalue()
    assert text.startswith("\rreplay [######------------------]  25%  5,000 records  1.0 MB/4.0 MB")
    assert "objects 2/8" in text and "500 rec/s" in text and "ETA 0:00:30" in text
    assert text.count("\r") == 1
    p.clear()
    assert out.getvalue().endswith("\r\x1b[K")
    p.finish(8000, 4_000_000, 8)
    assert out.getvalue().endswith("ETA 0:00:00\x1b[K\n")


def test_summary_text_and_json():
    s = Summary("s3://b/p/", ["Orders"], "2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z", ["search"], False, [])
    s.records.update(read=12, duplicates=2, outside_range=1, replayed=9)
    s.parked, s.seconds, s.complete = 1, 3.0, True
    text = replay.render(s)
    assert "12 read, 2 duplicates removed, 1 outside the range, 0 already done, 9 replayed" in text
    assert "DAMAGED: 1" in text and "INCOMPLETE" not in text
    d = s.as_dict()
    assert d["records_per_second"] == 3.0 and json.dumps(d)


def test_progress_file_round_trip_and_identity(tmp_path):
    class Log:
        def __init__(self):
            self.lines = []

        def info(self, event, **kw):
            self.lines.append(event)

        warning = info

    run = {"archive": "s3://b/p/", "since": "x"}
    path = tmp_path / "r" / "state.json"
    state, resumed = State.open(path, run, resume=True, log=Log())
    assert not resumed  # nothing to resume yet
    state.streams["Orders/shardId-1"] = "123"
    state.objects["k"] = '"etag"'
    state.save()
    again, resumed = State.open(path, run, resume=True, log=Log())
    assert resumed and again.streams == {"Orders/shardId-1": "123"} and again.objects == {"k": '"etag"'}
    fresh, resumed = State.open(path, run, resume=False, log=Log())
    assert not resumed and fresh.streams == {}
    with pytest.raises(ConfigError, match="another run"):
        State.open(path, {**run, "since": "y"}, resume=True, log=Log())
