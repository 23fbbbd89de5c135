"""The KCL integration rig: moto and osmem-server on loopback, a source table with a stream, and
real ``worker daemon`` processes (Java launcher, KCL, adapter, ``worker kcl`` children).

Every scenario gets its own rig (its own moto server on a free port), so scenarios run in parallel
under pytest-xdist. Expected results are computed from the source table's final items, never from
the code under test: aggregates by a plain recomputation, the index against the items, the archive
against the sequence numbers read from the stream.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from worker import config
from worker.app import build_pipeline
from worker.aws import client
from worker.emulators import Moto, free_port, start_moto, start_osmem
from worker.runtime import local_kcl

TABLE = "Orders"
STATUSES = ("pending", "paid", "shipped", "cancelled")
CITIES = ("Lisbon", "Porto", "Osaka", "Seoul")

CONFIG = """
[worker]
table = "Orders"
region = "us-east-1"
log_format = "json"
log_level = "info"

[kcl]
application_name = "{app}"

[deadletter]
url = "{deadletters}"

[[aggregates]]
name = "by_status"
table = "OrderStats"
group_by = ["status"]
metrics = {{ orders = "count", revenue = "sum(total)" }}

[search]
index = "orders"

[archive]
bucket = "orders-archive"
prefix = "changes/"
max_age_seconds = 2.0

[pipeline]
flush_interval = 0.5
commit_interval = 1.0
"""

# Tests: 50 records per GetRecords, so a few hundred changes make several batches.
TEST_PROPERTIES = {**local_kcl.LOCAL_PROPERTIES, "maxRecords": "50"}


def start_fake_rollover_moto(every: int, timeout: float = 30.0) -> Moto:
    """moto server with the FAKE shard rollover of ``fake_rollover_moto.py`` (a shard closes every ``every``)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fake_rollover_moto.py")), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "FAKE_ROLLOVER_EVERY": str(every)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    moto = Moto(proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake moto server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{moto.url}/moto-api/", timeout=1).close()
            return moto
        except OSError:
            time.sleep(0.1)
    moto.stop()
    raise RuntimeError("fake moto server did not start")


class Rig:
    def __init__(self, tmp: Path, app: str = "worker-it", rollover_every: int = 0) -> None:
        self.tmp = tmp
        self.moto = start_fake_rollover_moto(rollover_every) if rollover_every else start_moto()
        self.osmem = start_osmem()
        self.lib = local_kcl.classpath_dir(os.environ)
        self.config_path = tmp / "worker.toml"
        self.config_path.write_text(CONFIG.format(app=app, deadletters=tmp / "deadletters"))
        self.env = {"WORKER__AWS__ENDPOINT_URL": self.moto.url, "WORKER__SEARCH__URL": self.osmem.url}
        self.cfg = config.load(self.config_path, env=self.env)
        self.ddb = client(self.cfg, "dynamodb")
        self.streams = client(self.cfg, "dynamodbstreams")
        self.arn = local_kcl.create_source_table(self.ddb, TABLE, ["order_id"], ["S"])
        build_pipeline(self.cfg, provision=True).close()
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.rng = random.Random(1729)
        self.written = 0

    # -- source ------------------------------------------------------------------------------

    def write(self, n: int, keys: int = 60) -> None:
        """``n`` random puts and deletes on ``keys`` orders."""
        for _ in range(n):
            oid = f"o-{self.rng.randrange(keys):03d}"
            if self.rng.random() < 0.12:
                self.ddb.delete_item(TableName=TABLE, Key={"order_id": {"S": oid}})
            else:
                item = {
                    "order_id": {"S": oid},
                    "status": {"S": self.rng.choice(STATUSES)},
                    "total": {"N": str(Decimal(self.rng.randrange(100, 50000)) / 100)},
                    "ship": {"M": {"city": {"S": self.rng.choice(CITIES)}}},
                    "version": {"N": str(self.written)},
                }
                self.ddb.put_item(TableName=TABLE, Item=item)
            self.written += 1

    def items(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"TableName": TABLE, "ConsistentRead": True}
        while True:
            page = self.ddb.scan(**kwargs)
            for item in page["Items"]:
                out[item["order_id"]["S"]] = item
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def stream(self) -> local_kcl.StreamContent:
        return local_kcl.read_stream(self.streams, self.arn)

    # -- daemons -----------------------------------------------------------------------------

    def start(self, worker_id: str = "w1", properties: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        metrics = self.tmp / f"metrics-{worker_id}"
        env = local_kcl.daemon_env(
            os.environ, endpoint_url=self.moto.url, search_url=self.osmem.url, metrics_dir=str(metrics), lib=self.lib
        )
        env["WORKER__KCL__WORKER_ID"] = worker_id
        argv = local_kcl.daemon_argv(str(self.config_path), properties or TEST_PROPERTIES)
        proc = local_kcl.start_daemon(argv, env, self.tmp / f"daemon-{worker_id}.log")
        self.daemons.append(proc)
        return proc

    def leases(self) -> dict[str, str | None]:
        return local_kcl.checkpoints(self.ddb, self.cfg.kcl.application_name)

    def owners(self) -> dict[str, str | None]:
        from worker.errors import FatalError
        from worker.leases import read_leases

        try:
            return {lease.shard: lease.owner for lease in read_leases(self.ddb, self.cfg.kcl.application_name)}
        except FatalError:  # no lease table yet
            return {}

    def wait_checkpointed(self, proc: subprocess.Popen[bytes], timeout: float = 240.0) -> dict[str, str | None]:
        return local_kcl.wait_checkpointed(
            self.ddb,
            self.cfg.kcl.application_name,
            self.stream(),
            alive=lambda: proc.poll() is None,
            timeout=timeout,
        )

    def wait_for(
        self, what: str, cond: Any, proc: subprocess.Popen[bytes] | None = None, timeout: float = 240.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}; {self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; {self.logs()}")

    def children(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """Pids of the ``worker kcl`` shard processes under the daemon."""
        pids = []
        for pid in local_kcl.descendants(proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"worker" in cmd and b"kcl" in cmd:
                pids.append(pid)
        return pids

    def metric_files(self, worker_id: str = "w1") -> list[dict[str, Any]]:
        out = []
        for path in (self.tmp / f"metrics-{worker_id}").glob("*.json"):
            try:
                out.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue
        return out

    def logs(self) -> str:
        return "logs in " + ", ".join(str(p) for p in sorted(self.tmp.glob("daemon-*.log")))

    def close(self) -> None:
        for proc in self.daemons:
            local_kcl.kill_group(proc)
        self.moto.stop()
        self.osmem.close()

    # -- the exact results -------------------------------------------------------------------

    def sinks(self) -> dict[str, Any]:
        pipeline = build_pipeline(self.cfg)
        try:
            return {sink.name: sink.report() for sink in pipeline.sinks}  # type: ignore[attr-defined]
        finally:
            pipeline.close()

    def archive_lines(self) -> Counter[tuple[str, int]]:
        s3 = client(self.cfg, "s3")
        seen: Counter[tuple[str, int]] = Counter()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="orders-archive", Prefix="changes/"):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket="orders-archive", Key=obj["Key"])["Body"].read()
                for line in gzip.decompress(body).splitlines():
                    doc = orjson.loads(line)
                    seen[(doc["shard_id"], int(doc["record"]["dynamodb"]["SequenceNumber"]))] += 1
        return seen

    def assert_exact(self) -> dict[str, Any]:
        """Aggregates = recomputation from the final items; index = the table; archive = the stream, once."""
        items = self.items()
        report = self.sinks()
        expected: dict[str, list[Any]] = {}
        counts: Counter[str] = Counter()
        sums: dict[str, Decimal] = {}
        for item in items.values():
            status = item["status"]["S"]
            counts[status] += 1
            sums[status] = sums.get(status, Decimal(0)) + Decimal(item["total"]["N"])
        expected = {s: [counts[s], sums[s]] for s in counts}
        got = {
            row["group"]["status"]: [row["metrics"]["orders"], Decimal(str(row["metrics"]["revenue"]))]
            for row in report["aggregates"]["by_status"]
        }
        assert got == expected, f"aggregates {got} != recomputed {expected}"

        docs = report["search"]["orders"]
        assert set(docs) == set(items), "index ids != table keys"
        for oid, item in items.items():
            doc = docs[oid]
            assert doc["status"] == item["status"]["S"]
            assert Decimal(str(doc["total"])) == Decimal(item["total"]["N"])
            assert doc["version"] == int(item["version"]["N"]), f"{oid}: index holds an older version"

        content = self.stream()
        want = Counter({(shard, seq): 1 for shard, seqs in content.sequences.items() for seq in seqs})
        assert self.archive_lines() == want, "the archive does not hold every stream record exactly once"
        return report
