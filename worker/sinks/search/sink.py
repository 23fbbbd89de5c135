"""Search sink: an OpenSearch index whose live documents always equal the table's items.

One document per item (:mod:`worker.sinks.search.docs` gives the ``_id``, the
projected body and the metadata ``{"seq", "deleted", "expired"}`` under
``search.meta_field``). INSERT and MODIFY write the new image; REMOVE writes a
tombstone; a TTL expiry writes a tombstone (``ttl_policy = "delete"``) or keeps
the old image marked ``expired: true`` (``"mark"``). MODIFYs that change nothing
are skipped: the document already shows that state.

Cadence and freshness: flushed like the aggregates (every ``[pipeline]
max_batch_records`` records or ``flush_interval`` seconds), so a change is
searchable at worst ``flush_interval`` plus one flush plus the index's refresh
interval after it arrived. Records flushed before the checkpoint passes them
come again after a crash; the sequence-number compare-and-set makes them stale.

Ordering: compare-and-set on the stream sequence number
----------------------------------------------------------
Every document carries the sequence number of the change it shows, as a
40-digit zero-padded string (so text order equals numeric order). A flush
writes each buffered document like this:

1. read the current state of the chunk's documents with one ``_mget``:
   ``_seq_no``, ``_primary_term`` and the stored sequence number;
2. if the stored number is >= the change's, the change is stale or already
   applied: it is done, nothing is written (this is what makes redeliveries,
   restarts and replays idempotent);
3. otherwise write it in one ``_bulk`` with ``if_seq_no``/``if_primary_term`` of
   what was read (``create`` when nothing was there). A 409 means another write
   landed between read and write (a second worker during a lease hand-over):
   read again and decide again (bounded rounds, then RetryableError).

*Invariant:* a document's stored sequence number never decreases. Every
successful write was conditioned on the document being exactly the version
that was read, and that version's number was smaller than the one written.
So the document always shows the change with the largest sequence number ever
written for its item, and since every record up to a checkpoint has been
written or found stale before the pipeline checkpoints, it ends up showing the
item's newest change.

*Why the number is monotonic per item:* it is the record's own
``dynamodb.SequenceNumber``, not something the writer makes up. DynamoDB
assigns sequence numbers in the order of an item's modifications; it is a
property of the record, so every retry, restart, replay from a checkpoint or
from the archive carries the same number for the same change, whichever
process writes it. Assumption (A1): across a shard split an item's records in
a child shard have larger sequence numbers than its records in the parent
(DynamoDB publishes the child's records after the parent's, numbers grow in
publish order; the KCL also processes a parent to its end before its
children). Sequence numbers are compared as integers (21-40 digits), never
squeezed into OpenSearch's signed 64-bit external version (at most 19 digits):
no injective, order-preserving map exists, and timestamps (1 s resolution) or
per-process counters (Data Prepper's ``epoch seconds * 10^6 + counter``,
reset on every restart and child shard) give a newer change a smaller version
and lose it silently.

*Snapshot records* (a backfill's synthetic INSERTs, :mod:`worker.sources.backfill`)
are ordered by :attr:`~worker.records.StreamRecord.item_sequence`: the position
the snapshot was taken at, below every stream record of the item, so any live
write wins over a snapshot image whichever arrives first.

*Why deletes stay deleted:* a delete is a tombstone *document* carrying its
sequence number, not an engine delete. Engine tombstones are
garbage-collected after ``index.gc_deletes`` (60 s), after which an external
versioned stale write is accepted again and resurrects the item. A tombstone
document is never collected, so step 2 refuses a stale write however late it
comes. Searches exclude tombstones with :func:`~worker.sinks.search.docs.live_filter`
(``must_not term <meta_field>.deleted: true``) or through the filtered alias
``search.live_alias`` created with the index. Tombstones cost one small
document per deleted item; they may be purged only when older than any replay
that will ever run.

Assumptions: (A1) above; (A2) only this sink writes the index's documents (a
document without metadata is overwritten by the next change of its item);
(A3) routing is the default (``_id``), so ``if_seq_no`` applies per document.

Requests and errors
-------------------
Per flush: the newest change per document only; chunks bounded by
``bulk_max_actions`` and ``bulk_max_bytes`` (a 413 splits the chunk); one
``_mget`` and one ``_bulk`` per chunk. Per-item results: stale or written →
done; 409 → re-read; 429, 5xx, index-level failures (closed index, cluster
block) and connection errors → the documents stay buffered and ``flush()``
raises RetryableError (the pipeline retries with backoff, the checkpoint
waits, only what failed is sent again); 400 (mapping, parsing) or a document
too large even alone → a RecordError carrying OpenSearch's error is returned
from ``flush()``, so the pipeline parks the record.

This design needs index-scoped ``_mget`` and ``_bulk`` (``create``, and
``index`` with ``if_seq_no``/``if_primary_term``) and ``_source_includes``:
OpenSearch 1.0+ and Amazon OpenSearch Service have them, and so does
osmem-server (the local emulator; every one of them exercised by the tests).
OpenSearch Serverless lists ``<index>/_bulk`` but was not tried here, and has
no scroll, so :meth:`SearchSink.report` (``worker local`` only) does not work
there.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from worker.config import Config, SearchSection
from worker.diff import Change, ChangeKind, image_missing
from worker.errors import ConfigError, RecordError, RetryableError
from worker.log import get_logger
from worker.sinks.search.client import RequestTooLarge, SearchClient, connect
from worker.sinks.search.docs import (
    Projection,
    chunked,
    doc_id,
    live_filter,
    meta_mapping,
    stored_seq,
    strip_meta,
)

NAME = "search"
MAX_ROUNDS = 8  # read-decide-write rounds per flush while other writers keep winning
ACTION_OVERHEAD = 90  # bytes of an action line besides the id: keys, two 19-digit numbers

# 400-class item errors that concern the index, not the record: retried, never parked.
INDEX_LEVEL_ERRORS = frozenset(
    {
        "index_closed_exception",
        "cluster_block_exception",
        "index_not_found_exception",
        "no_shard_available_action_exception",
        "unavailable_shards_exception",
    }
)


@dataclass
class _Pending:
    change: Change
    body: bytes | None = None  # encoded once, kept across retried flushes


@dataclass(frozen=True)
class IndexSetup:
    """What to create when the index is missing: the index body and an optional composable template."""

    body: Mapping[str, Any]
    template: Mapping[str, Any] | None = None
    template_name: str = ""


class SearchSink:
    """The search sink (see the module docstring). Not thread-safe: one per pipeline."""

    name = NAME

    def __init__(
        self,
        client: SearchClient,
        section: SearchSection,
        *,
        setup: IndexSetup | None = None,
        max_rounds: int = MAX_ROUNDS,
        log: Any = None,
    ) -> None:
        self.client = client
        self.section = section
        self.index = section.index
        self.meta = section.meta_field
        self.projection = Projection(
            include=tuple(section.include),
            exclude=tuple(section.exclude),
            rename=dict(section.rename),
            decimals=section.decimals,
            meta_field=section.meta_field,
        )
        self.setup = setup or index_setup(section, None)
        self.max_rounds = max_rounds
        self.log = log or get_logger("worker.sinks.search")
        self.stats: Counter[str] = Counter()  # written / stale / conflicts / parked / retried / skipped-noop
        self._pending: dict[str, _Pending] = {}
        self._refused: list[RecordError] = []
        self._ready = False

    # -- Sink ---------------------------------------------------------------------------

    def add(self, change: Change) -> None:
        """Buffer the newest change per document (no I/O)."""
        if change.noop:
            self.stats["skipped-noop"] += 1
            return
        if change.kind is ChangeKind.MODIFY and not change.record.has_new_image:
            raise image_missing(change, "new", NAME)
        doc = doc_id(change.key)
        held = self._pending.get(doc)
        if held is None or change.record.item_sequence >= held.change.record.item_sequence:
            self._pending[doc] = _Pending(change)

    def flush(self) -> Sequence[RecordError]:
        """Write every buffered document (see the module docstring for the protocol)."""
        if self._pending:
            self.ensure_index()
            self._write()
        out, self._refused = self._refused, []
        return out

    def close(self) -> None:
        self._pending.clear()
        self._refused = []
        self.client.close()

    @property
    def pending(self) -> frozenset[str]:
        """The ids of documents whose newest change is not yet durable (a read-only view)."""
        return frozenset(self._pending)

    def report(self) -> dict[str, dict[str, Any]]:
        """``{index: {_id: document}}`` of live documents (tombstones excluded, metadata stripped)."""
        self.ensure_index()
        self.client.refresh(self.index)
        docs = {
            hit["_id"]: strip_meta(hit.get("_source") or {}, self.meta)
            for hit in self.client.scan(self.index, live_filter(self.meta))
        }
        return {self.index: dict(sorted(docs.items()))}

    # -- index ----------------------------------------------------------------------------

    def ensure_index(self) -> None:
        """Create the index (and the template, the live alias) when it is missing."""
        if self._ready:
            return
        if not self.client.index_exists(self.index):
            if self.setup.template is not None:
                self.client.put_index_template(self.setup.template_name, self.setup.template)
            created = self.client.create_index(self.index, self.setup.body)
            self.log.info("search index created" if created else "search index appeared meanwhile", index=self.index)
        self._ready = True

    # -- writing ----------------------------------------------------------------------------

    def _write(self) -> None:
        todo: list[str] = []
        for doc, held in list(self._pending.items()):
            if held.body is None:
                try:
                    held.body = self._body(held.change)
                except RecordError as exc:
                    self._refuse(doc, exc.reason, exc.field)
                    continue
            todo.append(doc)
        failed: list[tuple[str, dict[str, Any]]] = []
        for _ in range(self.max_rounds):
            conflicts: list[str] = []
            sizes = ((d, ACTION_OVERHEAD + len(d.encode()) + len(self._pending[d].body or b"")) for d in todo)
            for chunk in chunked(sizes, self.section.bulk_max_actions, self.section.bulk_max_bytes):
                conflicts.extend(self._write_chunk(chunk, failed))
            todo = conflicts
            if not todo:
                break
        if todo:
            raise RetryableError(f"search: {len(todo)} documents kept conflicting for {self.max_rounds} rounds")
        if failed:
            doc, item = failed[0]
            self.stats["retried"] += len(failed)
            raise RetryableError(
                f"search: {len(failed)} documents not written (first: {doc!r}: {item.get('status')} {_describe(item)})"
            )

    def _write_chunk(self, chunk: list[str], failed: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """One read-decide-write step for ``chunk``; returns the ids that met a concurrent write."""
        current = self.client.mget(self.index, chunk, f"{self.meta}.seq")
        lines: dict[str, bytes] = {}
        for doc, cur in zip(chunk, current, strict=True):
            held = self._pending[doc]
            seq = held.change.record.item_sequence
            if cur.get("found"):
                stored = stored_seq(cur.get("_source"), self.meta)
                if stored is not None and stored >= seq:
                    self._done(doc, "stale")  # refused stale write: counts as done
                    continue
                action = {"index": {"_id": doc, "if_seq_no": cur["_seq_no"], "if_primary_term": cur["_primary_term"]}}
            else:
                action = {"create": {"_id": doc}}
            lines[doc] = orjson.dumps(action) + b"\n" + (held.body or b"") + b"\n"
        conflicts: list[str] = []
        for doc, item in self._bulk(list(lines), lines):
            status = item.get("status", 0)
            if 200 <= status < 300:
                self._done(doc, "written")
            elif status == 409:
                self.stats["conflicts"] += 1
                conflicts.append(doc)
            elif status in (400, 413) and _error_type(item) not in INDEX_LEVEL_ERRORS:
                self._refuse(
                    doc, f"OpenSearch refused the document: {status} {_describe(item)}", None, item.get("error")
                )
            else:
                failed.append((doc, item))
        return conflicts

    def _bulk(self, docs: list[str], lines: Mapping[str, bytes]) -> list[tuple[str, dict[str, Any]]]:
        if not docs:
            return []
        try:
            items = self.client.bulk(self.index, b"".join(lines[d] for d in docs), len(docs))
        except RequestTooLarge as exc:
            if len(docs) == 1:  # too large even alone: the service will never take it
                return [(docs[0], {"status": 413, "error": {"type": "request_too_large", "reason": str(exc)}})]
            mid = len(docs) // 2
            return self._bulk(docs[:mid], lines) + self._bulk(docs[mid:], lines)
        return list(zip(docs, items, strict=True))

    def _body(self, change: Change) -> bytes:
        seq = change.record.item_sequence
        kind = change.kind
        if kind is ChangeKind.REMOVE or (kind is ChangeKind.TTL_EXPIRE and self.section.ttl_policy == "delete"):
            return self.projection.tombstone(seq)
        if kind is ChangeKind.TTL_EXPIRE:
            return self.projection.document(change.old or change.key, seq, expired=True)
        new = change.record.new_image_json(self.projection.decimals)
        if new is None:
            raise RecordError(
                "the record has no new image (the stream must include NEW_IMAGE)", field="dynamodb.NewImage"
            )
        return self.projection.document(new, seq)

    def _done(self, doc: str, outcome: str) -> None:
        self.stats[outcome] += 1
        del self._pending[doc]

    def _refuse(self, doc: str, reason: str, field: str | None, error: Any = None) -> None:
        record = self._pending.pop(doc).change.record
        self.stats["parked"] += 1
        self.log.warning(
            "search document refused",
            where=record.location,
            shard=record.shard_id,
            sequence=record.sequence_number,
            id=doc,
            error=reason,
        )
        message = reason if error is None else f"{reason}; error: {orjson.dumps(error).decode()}"
        self._refused.append(
            RecordError(message, where=record.location, field=field, payload=record.original(), sink=NAME)
        )


def _error_type(item: Mapping[str, Any]) -> str:
    err = item.get("error")
    return str(err.get("type", "")) if isinstance(err, Mapping) else ""


def _describe(item: Mapping[str, Any]) -> str:
    err = item.get("error")
    if isinstance(err, Mapping):
        return f"{err.get('type')}: {err.get('reason')}"
    return str(err or "")


# -- construction -------------------------------------------------------------------------------


def index_setup(section: SearchSection, template: Mapping[str, Any] | None) -> IndexSetup:
    """The creation request for a missing index, from the optional template file's content.

    A file with ``index_patterns`` is a composable index template: it is put as
    ``worker-<index>`` and the index is then created with the metadata mapping
    only. Any other file is the index body itself (``settings``, ``mappings``,
    ``aliases``); the metadata mapping is merged into its mappings.
    """
    composable = template is not None and "index_patterns" in template
    body: dict[str, Any] = {} if composable or template is None else orjson.loads(orjson.dumps(template))
    mappings = body.setdefault("mappings", {})
    mappings.setdefault("properties", {}).setdefault(section.meta_field, meta_mapping())
    if section.live_alias:
        body.setdefault("aliases", {})[section.live_alias] = {"filter": live_filter(section.meta_field)}
    if composable:
        assert template is not None
        return IndexSetup(body, template, f"worker-{section.index}")
    return IndexSetup(body)


def load_template(cfg: Config, section: SearchSection) -> Mapping[str, Any] | None:
    """The template file's JSON (``search.template``, relative to the configuration file)."""
    if not section.template:
        return None
    path = cfg.resolve(section.template)
    try:
        obj = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError("search.template", f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError("search.template", f"{path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ConfigError("search.template", f"{path} must hold a JSON object")
    patterns = obj.get("index_patterns")
    if patterns is not None:
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not any(fnmatch.fnmatchcase(section.index, str(p)) for p in patterns):
            raise ConfigError("search.template", f"index_patterns {patterns} do not match index {section.index!r}")
    return obj


def create(cfg: Config, *, provision: bool = False) -> SearchSink:
    """The sink for ``cfg.search``. The index (from ``search.template``) is created when
    missing: at once with ``provision=True`` (local runs, tests: fail fast), else at the
    first flush (so a cluster that is briefly unavailable at start is retried)."""
    section = cfg.search
    if section is None:
        raise ConfigError("search", "not configured")
    if not section.url:
        raise ConfigError("search.url", "required (worker local starts osmem-server when it is empty)")
    setup = index_setup(section, load_template(cfg, section))
    sink = SearchSink(connect(section, cfg.worker.region), section, setup=setup)
    if provision:
        sink.ensure_index()
    return sink
