"""The pure parts of ``worker local --engine kcl`` (worker.runtime.local_kcl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import FatalError
from worker.records import RawRecord
from worker.runtime import local_kcl


def test_engine_label_reads_the_versions_from_the_jar_names(tmp_path: Path) -> None:
    for name in (
        "software.amazon.kinesis.amazon-kinesis-client-3.1.3.jar",
        "software.amazon.kinesis.amazon-kinesis-client-multilang-3.1.3.jar",
        "com.amazonaws.dynamodb-streams-kinesis-adapter-2.0.1.jar",
        "com.amazonaws.dynamodb-lock-client-1.4.0.jar",
    ):
        (tmp_path / name).touch()
    assert local_kcl.engine_label(str(tmp_path)) == "kcl 3.1.3 + adapter 2.0.1"
    (tmp_path / "com.amazonaws.dynamodb-streams-kinesis-adapter-2.0.1.jar").unlink()
    with pytest.raises(FatalError, match="dynamodb-streams-kinesis-adapter"):
        local_kcl.engine_label(str(tmp_path))


def record(event: str, seq: int, key: str, new: dict | None) -> RawRecord:
    ddb: dict = {
        "Keys": {"id": {"S": key}},
        "SequenceNumber": str(seq),
        "StreamViewType": "NEW_AND_OLD_IMAGES",
        "ApproximateCreationDateTime": 1795328218.915,
    }
    if new is not None:
        ddb["NewImage"] = new
    if event != "INSERT":
        ddb["OldImage"] = {"id": {"S": key}}
    return RawRecord({"eventName": event, "dynamodb": ddb}, f"f.jsonl:{seq}")


def test_changes_put_new_images_delete_removed_keys_and_skip_unreadable_records() -> None:
    item = {"id": {"S": "a"}, "n": {"N": "1"}}
    batch, skipped = local_kcl.changes(
        [record("INSERT", 1, "a", item), RawRecord(b"not json", "f.jsonl:2"), record("REMOVE", 3, "a", None)]
    )
    assert [(c.item, c.key) for c in batch] == [(item, {"id": {"S": "a"}}), (None, {"id": {"S": "a"}})]
    assert skipped == ["f.jsonl:2"]
    assert local_kcl.key_schema(batch) == (["id"], ["S"])
    with pytest.raises(FatalError):
        local_kcl.key_schema([])


def test_stream_content_counts_what_the_checkpoints_cover() -> None:
    content = local_kcl.StreamContent({"s-1": (10, 20, 30), "s-2": (5,)}, {"INSERT": 4})
    assert content.records == 4
    assert content.checkpointed({}) == 0
    assert content.checkpointed({"s-1": "20", "s-2": "TRIM_HORIZON"}) == 2
    assert content.checkpointed({"s-1": "30", "s-2": "SHARD_END"}) == 4


def test_daemon_command_and_environment_never_reach_instance_metadata() -> None:
    argv = local_kcl.daemon_argv("/c.toml", {"failoverTimeMillis": "4000"})
    assert argv[-4:] == ["--config", "/c.toml", "--kcl-property", "failoverTimeMillis=4000"]
    env = local_kcl.daemon_env({}, endpoint_url="http://127.0.0.1:1", search_url=None, metrics_dir="/m", lib="/l")
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["WORKER__KCL__DISABLE_WORKER_METRICS"] == "true"
    assert env["WORKER__KCL__HTTP_HOST"] == "127.0.0.1"
    assert "WORKER__SEARCH__URL" not in env
