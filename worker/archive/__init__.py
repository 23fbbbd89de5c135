"""The S3 change archive's format in one place: written by :mod:`worker.sinks.archive`, read by replays.

* :mod:`.layout`: object names, partitions, the line envelope (encoding and decoding).
* :mod:`.reader`: listing the objects of a time range, reading and parsing one object.
* :mod:`.merge`: merging a stream's objects into each record once, in order.

Neither the sink nor the replay source imports the other; both import this package.
"""

from worker.archive.layout import (
    SUFFIX,
    ObjectName,
    encode_line,
    gunzip,
    hour_of,
    parse_key,
    parse_line,
    partition,
    shard_created_ms,
    stream_of,
)
from worker.archive.merge import Event, Finished, MergeStats, Opened, merge, plan, read_all
from worker.archive.reader import (
    ArchivedObject,
    Entry,
    Loaded,
    Prefetcher,
    list_all,
    list_objects,
    list_tables,
    parse_object,
    read_object,
)

__all__ = [
    "SUFFIX",
    "ArchivedObject",
    "Entry",
    "Event",
    "Finished",
    "Loaded",
    "MergeStats",
    "ObjectName",
    "Opened",
    "Prefetcher",
    "encode_line",
    "gunzip",
    "hour_of",
    "list_all",
    "list_objects",
    "list_tables",
    "merge",
    "parse_key",
    "parse_line",
    "parse_object",
    "partition",
    "plan",
    "read_all",
    "read_object",
    "shard_created_ms",
    "stream_of",
]
