"""The replay driver: archive objects of a range, merged, fed to a pipeline; resume state after each flush."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from worker import archive
from worker.errors import RecordError
from worker.pipeline import Pipeline, Position, StopProcessing
from worker.records import StreamRecord
from worker.sources import snapshot
from worker.sources.replay.state import State, iso

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["Options", "Progress", "Replay", "Summary"]


_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])(?: ?ago)?$")  # 24h, 24h ago, -24h: before now


def relative(text: str) -> bool:
    """Whether a time as given (``now``, ``7d``) is relative to when the command runs."""
    t = text.strip()
    return t == "now" or bool(_RELATIVE.match(t))


@dataclass(frozen=True)
class Options:
    """One replay: which archive, which range, which sinks, and how."""

    bucket: str
    prefix: str
    since: dt.datetime
    until: dt.datetime
    tables: tuple[str, ...]  # () = every table in the archive
    sinks: tuple[str, ...]
    dry_run: bool = False
    rebuild: tuple[str, ...] = ()
    into: str | None = None
    resume: bool = False
    state: Path | None = None
    provision: bool = False
    prefetch: int = 4
    since_text: str = ""  # as given: a relative one ("7d") names the same run when resumed later
    until_text: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (a state file is only resumed by the same one)."""
        return {
            "archive": self.url,
            "since": self.since_text if relative(self.since_text) else iso(self.since),
            "until": self.until_text if relative(self.until_text) else iso(self.until),
            "tables": list(self.tables),
            "sinks": list(self.sinks),
            "rebuild": list(self.rebuild),
            "into": self.into,
        }

    def resume_hint(self) -> str:
        """How to continue this run: the same options and ``--resume`` (the range is the one saved)."""
        return f"continue with the same command and --resume (it replays the saved range: {iso(self.since)} to " + (
            f"{iso(self.until)})"
        )

    def run_id(self) -> str:
        import orjson

        return hashlib.sha256(orjson.dumps(self.identity(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class Summary:
    """What a replay did (rendered by ``worker replay``)."""

    archive: str
    tables: list[str]
    since: str
    until: str
    sinks: list[str]
    dry_run: bool
    rebuild: list[str]
    resumed: bool = False
    state: str | None = None
    objects: dict[str, int] = field(default_factory=lambda: {"listed": 0, "read": 0, "skipped": 0})
    records: dict[str, int] = field(
        default_factory=lambda: {
            "read": 0,  # lines with a sequence number (= the sum of the four below and undecodable)
            "duplicates": 0,
            "outside_range": 0,
            "already_done": 0,
            "replayed": 0,
            "undecodable": 0,
        }
    )
    bytes_read: int = 0
    parked: int = 0
    shards: int = 0
    ignored_keys: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False
    snapshot: str | None = None  # --rebuild: the snapshot it started from (worker.sources.snapshot)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["records_per_second"] = round(self.records["replayed"] / self.seconds, 1) if self.seconds else 0.0
        return out


class Progress(Protocol):
    """Where the driver reports progress (``worker replay`` draws it)."""

    def update(self, records: int, done_bytes: int, objects: int, *, force: bool = False) -> None: ...

    def clear(self) -> None: ...

    def finish(self, records: int, done_bytes: int, objects: int) -> None: ...


class Replay:
    """One replay run: :meth:`list`, then :meth:`open_state`, then :meth:`run` with a pipeline.

    The pipeline is built by the caller between the second and third step
    (a rebuild checks its target tables against the resume state first).
    """

    def __init__(self, opts: Options, s3: S3Client, *, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.opts, self.s3, self.log, self.clock = opts, s3, log, clock
        self.started = clock()
        self.summary = Summary(
            opts.url,
            list(opts.tables),
            iso(opts.since),
            iso(opts.until),
            list(opts.sinks),
            opts.dry_run,
            list(opts.rebuild),
        )
        self.listed: list[archive.ArchivedObject] = []
        self.since = opts.since  # a rebuild from a snapshot starts at the snapshot's position

    def list(self) -> None:
        """The tables and the objects of the range (partition pruning)."""
        opts, summary = self.opts, self.summary
        summary.tables = list(opts.tables) or archive.list_tables(self.s3, opts.bucket, opts.prefix)

        def ignored(key: str) -> None:
            summary.ignored_keys.append(key)
            self.log.warning("not an archive object; ignored", key=f"s3://{opts.bucket}/{key}")

        if opts.rebuild:  # from the latest snapshot at or before the range, other snapshots left out
            base = snapshot.rebuild_base(
                self.s3, opts.bucket, opts.prefix, summary.tables, since=opts.since, until=opts.until
            )
            if base is not None:
                self.since, summary.snapshot, summary.since = base.taken, base.stream, iso(base.taken)
        self.listed = archive.list_objects(
            self.s3, opts.bucket, opts.prefix, summary.tables, since=self.since, until=opts.until, ignored=ignored
        )
        if opts.rebuild:
            self.listed = [
                o
                for o in self.listed
                if not snapshot.is_snapshot_stream(o.name.stream) or o.name.stream == summary.snapshot
            ]
        summary.objects["listed"] = len(self.listed)
        if not self.listed:
            self.log.warning(
                "nothing to replay: no archive objects in the range",
                archive=opts.url,
                tables=summary.tables,
                since=iso(opts.since),
                until=iso(opts.until),
            )

    def open_state(self) -> tuple[State, bool]:
        """The resume state (none for a dry run) and whether it continues an earlier run."""
        opts = self.opts
        state, resumed = State.open(None if opts.dry_run else opts.state, opts.identity(), opts.resume, self.log)
        state.range = {"since": iso(opts.since), "until": iso(opts.until)}
        self.summary.resumed, self.summary.state = resumed, str(opts.state) if state.path else None
        return state, resumed

    def run(
        self,
        state: State,
        pipeline: Pipeline | None,
        progress: Callable[[int, int], Progress],
        *,
        max_batch_records: int,
    ) -> Summary:
        """Feed every record of the range once, in order; ``pipeline=None`` only counts (dry run).

        After every flush the state records, per stream, the sequence number in
        the :class:`~worker.pipeline.Position` the flush returned, and the
        objects whose every record was then durable.
        """
        opts, summary, records = self.opts, self.summary, self.summary.records
        if pipeline is not None:
            state.save()
        todo = [o for o in self.listed if state.objects.get(o.key) != o.etag]
        summary.objects["skipped"] = len(self.listed) - len(todo)
        groups = archive.plan(todo)
        summary.shards = len(groups)
        order = [o for _, objs in groups for o in objs]
        bar = progress(sum(o.size for o in order), len(order))
        loader = archive.Prefetcher(order, lambda o: archive.read_object(self.s3, opts.bucket, o), opts.prefetch)
        merge_stats = archive.MergeStats()
        pending = 0
        fed: dict[str, str] = {}  # pipeline position key -> "table/stream", since the last flush
        finished: dict[str, str] = {}

        def flush() -> None:
            nonlocal pending
            if pipeline is not None:
                position = pipeline.flush()
                state.streams.update(_durable(position, fed))
                state.objects.update(finished)
                state.save()
            fed.clear()
            finished.clear()
            pending = 0

        def park(error: RecordError) -> None:
            bar.clear()
            if pipeline is None:  # a dry run parks nothing: report only
                self.log.error(
                    "damaged archive line", where=error.where, error=error.reason, field=error.field, parked=False
                )
            else:  # logged, counted and parked like any other bad record
                pipeline.park(error)
            summary.parked += 1

        try:
            for (table, stream), objs in groups:
                sid = f"{table}/{stream}"
                done = int(state.streams[sid]) if sid in state.streams else -1
                for ev in archive.merge(objs, loader.get, merge_stats):
                    if isinstance(ev, StreamRecord):
                        if not self.since <= ev.created_at < opts.until:
                            records["outside_range"] += 1
                        elif ev.sequence <= done:
                            records["already_done"] += 1
                        else:
                            records["replayed"] += 1
                            if not records["replayed"] % 1000:
                                bar.update(records["replayed"], summary.bytes_read, summary.objects["read"])
                            if pipeline is not None:
                                key = ev.shard_id or ev.where  # how the pipeline names the record's stream
                                if fed.get(key, sid) != sid:  # the same name in another table: positions apart
                                    flush()
                                pipeline.add_record(ev)
                                fed[key] = sid
                                pending += 1
                                if pending >= max_batch_records:
                                    flush()
                    elif isinstance(ev, RecordError):
                        records["undecodable"] += 1
                        park(ev)
                    elif isinstance(ev, archive.Opened):
                        summary.objects["read"] += 1
                        records["read"] += len(ev.loaded.entries)
                        summary.bytes_read += ev.loaded.obj.size
                        for e in ev.loaded.errors:
                            park(e)
                        bar.update(records["replayed"], summary.bytes_read, summary.objects["read"])
                    else:
                        finished[ev.obj.key] = ev.etag
            flush()
        except StopProcessing:
            bar.clear()
            self.log.error("replay stopped; everything flushed so far is in the progress file", state=summary.state)
            self.log.error(opts.resume_hint())
            raise
        finally:
            loader.close()
            records["duplicates"] = merge_stats.duplicates
            summary.misplaced = merge_stats.misplaced
            bar.finish(records["replayed"], summary.bytes_read, summary.objects["read"])
            if pipeline is not None:
                pipeline.close()
        state.complete = summary.complete = True
        if pipeline is not None:
            state.save()
        summary.seconds = round(self.clock() - self.started, 3)
        return summary


def _durable(position: Position, fed: dict[str, str]) -> dict[str, str]:
    """Per "table/stream", the highest sequence number ``position`` reports durable."""
    out: dict[str, str] = {}
    for key, seq in position.sequences.items():
        sid = fed.get(key)
        if sid is not None and (sid not in out or int(seq) > int(out[sid])):
            out[sid] = seq
    return out
