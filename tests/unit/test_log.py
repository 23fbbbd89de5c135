"""One JSON shape for every line: structlog, the standard library and botocore alike."""

import io
import json
import logging

import pytest
import structlog

from worker import log


@pytest.fixture
def restore_logging():
    handlers, level = logging.root.handlers[:], logging.root.level
    worker_level = logging.getLogger("worker").level
    yield
    structlog.reset_defaults()
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    logging.getLogger("worker").setLevel(worker_level)


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_source_gives_the_same_json_keys(restore_logging):
    out = io.StringIO()  # not a terminal: "auto" means JSON
    log.configure("auto", "info", stream=out)
    structlog.get_logger("worker.kcl").bind(shard="shardId-1").info("batch flushed", sequence="4200", records=3)
    logging.getLogger("worker.plain").warning("plain %s", "stdlib")
    logging.getLogger("botocore.credentials").warning("Found credentials in environment variables.")
    try:
        raise ValueError("bad")
    except ValueError:
        structlog.get_logger("worker.x").exception("failed")
    structlog.get_logger("worker.x").debug("below the level")
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
    structlog.get_logger("worker.x").debug("hello", shard="s")
    text = out.getvalue()
    assert "hello" in text and "shard=s" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
