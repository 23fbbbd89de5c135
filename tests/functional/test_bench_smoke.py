"""Every benchmark besides ``e2e`` (see test_bench_e2e.py) runs end to end on a tiny workload.

No speed is asserted: each run must finish and print its targets in the house format, so a
benchmark broken by a change (a renamed field, a moved module) fails here instead of on the
day someone measures.
"""

from __future__ import annotations

import re

import pytest

from bench import aggregates, archive, pipeline, search

TARGET = re.compile(r"^target: .+: .+, (met|NOT met)$", re.MULTILINE)


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (pipeline, ["--records", "300", "--repeats", "1", "--no-rss"]),
        (aggregates, ["--records", "200", "--batch", "100"]),
        (search, ["--records", "200", "--repeats", "1"]),
        (archive, ["--records", "300", "--repeats", "1", "--max-records", "100"]),
    ],
    ids=["pipeline", "aggregates", "search", "archive"],
)
def test_the_benchmark_runs_and_prints_its_targets(
    module: object, argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    module.main(argv)  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert TARGET.search(out), out[-2000:]


def test_the_search_transport_pair_runs_as_often_as_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    search.main(["--records", "60", "--batch", "30", "--repeats", "1", "--transport-repeats", "3"])
    out = capsys.readouterr().out
    assert "best of 1 runs (the worker and direct urllib3: 3)" in out  # counted from the runs made
    assert "same documents in both indexes: yes" in out
