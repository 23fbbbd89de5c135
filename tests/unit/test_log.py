"""One JSON shape for every line: the worker's events, the standard library and botocore alike."""

import io
import json
import logging
import subprocess
import sys

import pytest

from worker import log


@pytest.fixture
def restore_logging():
    handlers, level = logging.root.handlers[:], logging.root.level
    worker_level = logging.getLogger("worker").level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    logging.getLogger("worker").setLevel(worker_level)


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_source_gives_the_same_json_keys(restore_logging):
    out = io.StringIO()  # not a terminal: "auto" means JSON
    log.configure("auto", "info", stream=out)
    log.get_logger("worker.kcl").bind(shard="shardId-1").info("batch flushed", sequence="4200", records=3)
    logging.getLogger("worker.plain").warning("plain %s", "stdlib")
    logging.getLogger("botocore.credentials").warning("Found credentials in environment variables.")
    try:
        raise ValueError("bad")
    except ValueError:
        log.get_logger("worker.x").exception("failed")
    log.get_logger("worker.x").debug("below the level")
    logging.getLogger("urllib3").info("below the library level")
    got = lines(out)
    assert len(got) == 4
    for entry in got:
        assert list(entry)[:4] == ["timestamp", "level", "message", "logger"]
        assert entry["timestamp"].endswith("Z")
    assert got[0] | {"timestamp": None} == {
        "timestamp": None,
        "level": "info",
        "message": "batch flushed",
        "logger": "worker.kcl",
        "shard": "shardId-1",
        "sequence": "4200",
        "records": 3,
    }
    assert (got[1]["level"], got[1]["message"], got[1]["logger"]) == ("warning", "plain stdlib", "worker.plain")
    assert got[2]["logger"] == "botocore.credentials"
    assert got[3]["level"] == "error" and "ValueError: bad" in got[3]["exception"]


def test_console_format_is_readable_not_json(restore_logging):
    out = io.StringIO()
    log.configure("console", "debug", stream=out)
    log.get_logger("worker.x").debug("hello", shard="s")
    text = out.getvalue()
    assert "hello" in text and "shard=s" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_context_bound_passed_and_from_libraries_becomes_keys(restore_logging):
    out = io.StringIO()
    log.configure("json", "info", stream=out)
    base = log.get_logger("worker.k", shard="s1")
    base.bind(sequence="1").info("first", sequence="2", records=3)  # the call's context wins
    logging.getLogger("botocore.x").warning("library", extra={"endpoint": "http://h"})
    base.info("second", level="spoofed", message="spoofed")  # the common keys stay the record's
    first, library, second = lines(out)
    assert first | {"timestamp": None} == {
        "timestamp": None,
        "level": "info",
        "message": "first",
        "logger": "worker.k",
        "shard": "s1",
        "sequence": "2",
        "records": 3,
    }
    assert library["endpoint"] == "http://h" and library["logger"] == "botocore.x"
    assert (second["level"], second["message"], second["shard"]) == ("info", "second", "s1")
    assert "sequence" not in second  # bind gave a new logger; the base one is unchanged


def test_console_lines_carry_the_traceback(restore_logging):
    out = io.StringIO()
    log.configure("console", "info", stream=out)
    try:
        raise KeyError("missing")
    except KeyError:
        log.get_logger("worker.x").error("failed", exc_info=True, shard="s")
    text = out.getvalue()
    assert "failed" in text and "[worker.x]" in text and "shard=s" in text
    assert "KeyError: 'missing'" in text and "Traceback" in text


def test_before_configure_nothing_reaches_stdout():
    code = (
        "from worker.log import get_logger\n"
        "get_logger('worker.x').warning('a warning', k=1)\n"
        "get_logger('worker.x').info('an info')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout == ""  # stdout is the multilang protocol's
    assert "a warning" in run.stderr and "an info" not in run.stderr
