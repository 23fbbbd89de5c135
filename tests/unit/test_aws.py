"""AWS error classification and helpers, and the S3 dead letters classifying like the archive."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

from worker.aws import classify_s3, error_code, split_s3_url
from worker.deadletters import S3DeadLetters
from worker.errors import FatalError, RecordError, RetryableError


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("AccessDenied", FatalError),
        ("NoSuchBucket", FatalError),
        ("InvalidAccessKeyId", FatalError),
        ("SlowDown", RetryableError),
        ("InternalError", RetryableError),
    ],
)
def test_s3_errors_stop_on_permissions_and_missing_buckets_and_retry_the_rest(code: str, kind: type) -> None:
    assert error_code(client_error(code)) == code
    assert type(classify_s3(client_error(code), "put")) is kind


def test_s3_urls_split_into_bucket_and_prefix() -> None:
    assert split_s3_url("s3://b/dead/letters") == ("b", "dead/letters/")
    assert split_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        split_s3_url("file:///tmp/x")


class FailingS3:
    """A fake S3 client (no real part can refuse on demand) whose put_object raises ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def put_object(self, **kwargs: Any) -> Any:
        raise client_error(self.code)


@pytest.mark.parametrize(("code", "kind"), [("AccessDenied", FatalError), ("SlowDown", RetryableError)])
def test_s3_dead_letters_classify_like_the_archive(code: str, kind: type) -> None:
    dl = S3DeadLetters(FailingS3(code), "bucket", "dead/")  # type: ignore[arg-type]
    dl.park(RecordError("bad", where="f:1", payload={}))
    with pytest.raises(kind):
        dl.flush()
    assert dl.pending  # kept for the next attempt (or for nobody, when the worker stops)


def test_clients_share_one_session_per_credential_environment(tmp_path, monkeypatch) -> None:
    from worker import config
    from worker.aws import client

    path = tmp_path / "w.toml"
    path.write_text('[worker]\nregion = "us-east-1"\n[aws]\nendpoint_url = "http://127.0.0.1:9"\n')
    cfg = config.load(path, env={})
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    ddb, s3 = client(cfg, "dynamodb"), client(cfg, "s3")
    # One loader: the service models and endpoint rules are loaded once per process.
    assert ddb._loader is s3._loader
    assert ddb._request_signer._credentials.access_key == "first"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second")  # another identity: another session
    other = client(cfg, "s3")
    assert other._loader is not s3._loader
    assert other._request_signer._credentials.access_key == "second"


def test_clients_and_credentials_come_from_botocore_without_boto3s_session(tmp_path) -> None:
    """boto3's session (resources, s3transfer, multiprocessing) is not loaded to make a client."""
    path = tmp_path / "w.toml"
    path.write_text('[worker]\nregion = "us-east-1"\n[aws]\nendpoint_url = "http://127.0.0.1:9"\n')
    code = (
        "import sys\n"
        "from worker import config\n"
        "from worker.aws import client, credentials\n"
        f"cfg = config.load({str(path)!r}, env={{}})\n"
        "s3, ddb = client(cfg, 's3'), client(cfg, 'dynamodb')\n"
        "print(type(s3).__name__, type(ddb).__name__, credentials().access_key,\n"
        "      sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 's3transfer', 'multiprocessing'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WORKER"))} | {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "botocore-key",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["S3", "DynamoDB", "botocore-key", "[]"]
