"""Replay as a source: a time range of the S3 archive, fed through the pipeline again.

The archive's format lives in :mod:`worker.archive`; this package drives it:
:mod:`.driver` (the loop), :mod:`.state` (resume state), :mod:`.rebuild`
(rebuild administration). ``worker replay`` parses arguments, builds the
pipeline (:mod:`worker.app`), draws progress and prints the summary.

What it guarantees:

* **Every record of the range, once, in order.** The hour partitions of
  ``[since, until)`` are listed (partition pruning); objects are merged per
  shard by sequence number, duplicates (overlapping objects written by
  redeliveries) removed; shards go parents first (by the creation time
  DynamoDB embeds in shard ids; the archive does not know the lineage), each
  shard completely before the next. Records outside the range in the edge
  hours are left out.
* **The same pipeline** as live processing (``worker.app.build_pipeline``),
  so the sinks' idempotence makes a replay of a range already applied change
  nothing. By default every configured sink but the archive itself is fed.
* **Damage is never skipped silently**: a bad gzip stream, a line that is not
  JSON or a record that does not decode is logged with ``s3://bucket/key:line``,
  parked in the dead letters, counted in the summary; the replay goes on.
* **Resumable**: after every flush of the pipeline the state file records, per
  shard, the last sequence number now durable in the sinks, and the objects
  done. ``--resume`` skips those objects and records. Without ``--resume`` a
  run starts over (harmless, only slower).
* ``--rebuild`` recomputes aggregates from the archive into an **empty** table
  (``--into`` another one, or the configured one emptied): it refuses a table
  that holds anything, naming it. Starting from nothing, every record counts
  once, however long ago the aggregate sink's per-shard bookkeeping forgot the
  shards. Stop the live workers for that table meanwhile (or rebuild into a
  new table and switch): two writers of one shard would defeat its high-water
  marks. When the archive holds snapshots (``worker backfill``), the rebuild
  starts from the latest one taken at or before ``--since`` (else the latest
  before ``--until``) and replays the records from its position on, leaving the
  other snapshots out: state older than the stream's 24 hours is rebuilt too.
"""

from worker.sources.replay.driver import Options, Progress, Replay, Summary
from worker.sources.replay.rebuild import rebuild_config, require_empty
from worker.sources.replay.state import State, iso

__all__ = ["Options", "Progress", "Replay", "State", "Summary", "iso", "rebuild_config", "require_empty"]
