"""The production path on emulators: ``worker local --engine kcl``.

The fixtures' changes are written to a DynamoDB table with a
``NEW_AND_OLD_IMAGES`` stream on moto (a PutItem of each new image, a
DeleteItem of each removed key, in order); ``worker daemon`` then runs the
real chain (Java launcher, KCL 3, the DynamoDB Streams Kinesis Adapter, one
``worker kcl`` child per shard lease) against moto's endpoints until the lease
table KCL wrote shows every stream record checkpointed, and is stopped with
SIGTERM (the graceful path). The integration tests drive the same pieces.

Never contacts instance metadata: the daemon renders
``disableWorkerMetrics = true`` and every process gets
``AWS_EC2_METADATA_DISABLED=true``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import FatalError

# KCL settings for emulator runs: short lease timeouts, shard syncs and polling so that a run
# (and a take-over after a crash) takes seconds, not minutes; no CloudWatch.
LOCAL_PROPERTIES: Mapping[str, str] = {
    "failoverTimeMillis": "4000",
    "shardSyncIntervalMillis": "2000",
    "idleTimeBetweenReadsInMillis": "250",
    "parentShardPollIntervalMillis": "500",
    "leasesRecoveryAuditorExecutionFrequencyMillis": "2000",
    "shutdownGraceMillis": "20000",
    "metricsLevel": "NONE",
}
REPO_LAUNCHER_LIB = Path(__file__).resolve().parents[2] / "launcher" / "target" / "lib"


def classpath_dir(env: Mapping[str, str]) -> str:
    """``WORKER_KCL_CLASSPATH_DIR``, else this checkout's ``launcher/target/lib`` (``.ci/dev`` builds it)."""
    configured = env.get("WORKER_KCL_CLASSPATH_DIR")
    if configured:
        return configured
    if REPO_LAUNCHER_LIB.is_dir():
        return str(REPO_LAUNCHER_LIB)
    raise FatalError(
        "no KCL launcher jars: run `bash .ci/dev local` (it builds launcher/) or set WORKER_KCL_CLASSPATH_DIR"
    )


def engine_label(lib: str) -> str:
    """``kcl <version> + adapter <version>``, read from the jar names in ``lib``."""
    names = os.listdir(lib)

    def version(prefix: str) -> str:
        for name in names:
            if name.startswith(prefix) and name.endswith(".jar") and name[len(prefix)].isdigit():
                return name[len(prefix) : -len(".jar")]
        raise FatalError(f"no {prefix}*.jar in {lib}")

    kcl = version("software.amazon.kinesis.amazon-kinesis-client-")
    adapter = version("com.amazonaws.dynamodb-streams-kinesis-adapter-")
    return f"kcl {kcl} + adapter {adapter}"


# -- the source table ----------------------------------------------------------------------------


def create_source_table(ddb: Any, table: str, key_names: Sequence[str], key_types: Sequence[str]) -> str:
    """Create ``table`` (hash key first, then range key) with a NEW_AND_OLD_IMAGES stream; its stream ARN."""
    schema = [
        {"AttributeName": name, "KeyType": kind} for name, kind in zip(key_names, ("HASH", "RANGE"), strict=False)
    ]
    ddb.create_table(
        TableName=table,
        KeySchema=schema,
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": t} for n, t in zip(key_names, key_types, strict=True)
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return str(ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"])


@dataclass(frozen=True)
class Change:
    """One write: ``item`` (PutItem) or ``key`` (DeleteItem), in DynamoDB's wire format."""

    where: str
    item: Mapping[str, Any] | None
    key: Mapping[str, Any]


def changes(records: Iterable[Any]) -> tuple[list[Change], list[str]]:
    """The writes that reproduce the fixture records (raw records), and the places skipped as unreadable."""
    from worker.decode import decode
    from worker.errors import RecordError

    out: list[Change] = []
    skipped: list[str] = []
    for raw in records:
        try:
            rec = decode(raw)
            wire = rec.original()["dynamodb"]
        except (RecordError, KeyError, TypeError):
            skipped.append(raw.where)
            continue
        new = wire.get("NewImage")
        out.append(Change(rec.location, new if new else None, wire["Keys"]))
    return out, skipped


def key_schema(batch: Sequence[Change]) -> tuple[list[str], list[str]]:
    """Key names (as the records list them: hash key first) and their types."""
    if not batch:
        raise FatalError("no readable change in the fixtures")
    key = batch[0].key
    return list(key), [next(iter(v)) for v in key.values()]


def write_changes(ddb: Any, table: str, batch: Sequence[Change], progress: Callable[[int], None]) -> None:
    for i, change in enumerate(batch, start=1):
        if change.item is not None:
            ddb.put_item(TableName=table, Item=dict(change.item))
        else:
            ddb.delete_item(TableName=table, Key=dict(change.key))
        progress(i)


# -- the stream and the lease table ---------------------------------------------------------------


@dataclass(frozen=True)
class StreamContent:
    """Every record on the stream, per shard: sequence numbers (in order) and event names."""

    sequences: Mapping[str, tuple[int, ...]]
    kinds: Mapping[str, int]

    @property
    def records(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def checkpointed(self, leases: Mapping[str, str | None]) -> int:
        """How many records the checkpoints cover."""
        done = 0
        for shard, seqs in self.sequences.items():
            cp = leases.get(shard)
            if cp == "SHARD_END":
                done += len(seqs)
            elif cp and cp.isdigit():
                done += sum(1 for s in seqs if s <= int(cp))
        return done


def read_stream(streams: Any, arn: str) -> StreamContent:
    """Read every shard from the trim horizon to its current end."""
    sequences: dict[str, tuple[int, ...]] = {}
    kinds = {"INSERT": 0, "MODIFY": 0, "REMOVE": 0}
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    for shard in shards:
        sid = shard["ShardId"]
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        seqs: list[int] = []
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            for rec in page["Records"]:
                seqs.append(int(rec["dynamodb"]["SequenceNumber"]))
                kinds[rec["eventName"]] = kinds.get(rec["eventName"], 0) + 1
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
        sequences[sid] = tuple(seqs)
    return StreamContent(sequences, kinds)


def checkpoints(ddb: Any, lease_table: str) -> dict[str, str | None]:
    """``{shard: checkpoint}`` from the lease table KCL wrote (empty while it does not exist)."""
    from worker.leases import read_leases

    try:
        return {lease.shard: lease.checkpoint for lease in read_leases(ddb, lease_table)}
    except FatalError:
        return {}


# -- the daemon -------------------------------------------------------------------------------------


def daemon_env(
    base: Mapping[str, str], *, endpoint_url: str, search_url: str | None, metrics_dir: str, lib: str
) -> dict[str, str]:
    """The environment of ``worker daemon`` (inherited by the JVM and the shard processes)."""
    env = dict(base)
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
        WORKER__AWS__ENDPOINT_URL=endpoint_url,
        WORKER__KCL__DISABLE_WORKER_METRICS="true",
        WORKER__KCL__HTTP_HOST="127.0.0.1",
        WORKER__KCL__METRICS_DIR=metrics_dir,
        WORKER_HTTP_PORT=str(_free_port()),
        WORKER_KCL_CLASSPATH_DIR=lib,
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.setdefault(name, "testing")
    if search_url:
        env["WORKER__SEARCH__URL"] = search_url
    return env


def _free_port() -> int:
    from worker.emulators import free_port

    return free_port()


def daemon_argv(config_path: str | None, properties: Mapping[str, str]) -> list[str]:
    argv = [sys.executable, "-m", "worker", "daemon"]
    if config_path:
        argv += ["--config", config_path]
    for key, value in properties.items():
        argv += ["--kcl-property", f"{key}={value}"]
    return argv


def start_daemon(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``worker daemon`` in its own process group (so a test can kill the daemon, JVM and children at once)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


def stop_daemon(proc: subprocess.Popen[bytes], grace: float = 40.0) -> int:
    """SIGTERM (the graceful KCL shutdown), then SIGKILL of the whole group after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill_group(proc)
    return int(proc.wait())


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon and every process under it at once (the launcher runs in its own session)."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), parents before children."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def wait_checkpointed(
    ddb: Any,
    lease_table: str,
    content: StreamContent,
    *,
    alive: Callable[[], bool],
    timeout: float,
    progress: Callable[[dict[str, str | None]], None] = lambda _leases: None,
    poll: float = 0.5,
) -> dict[str, str | None]:
    """Poll the lease table until the checkpoints cover every record of ``content``.

    The result also lists shards seen at ``SHARD_END`` whose leases KCL has since deleted.
    """
    deadline = time.monotonic() + timeout
    ended: set[str] = set()
    while True:
        leases = checkpoints(ddb, lease_table)
        # KCL deletes a parent's lease once its children reach SHARD_END: remember ended shards.
        ended |= {shard for shard, cp in leases.items() if cp == "SHARD_END"}
        leases.update({shard: "SHARD_END" for shard in ended if shard not in leases})
        progress(leases)
        if leases and content.checkpointed(leases) == content.records:
            return leases
        if not alive():
            raise FatalError("worker daemon exited before every change was checkpointed")
        if time.monotonic() > deadline:
            raise FatalError(
                f"not every change checkpointed within {timeout:.0f} s "
                f"({content.checkpointed(leases)}/{content.records}; leases {leases})"
            )
        time.sleep(poll)


def run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="worker-local-kcl-"))
