"""The search sink (:mod:`.sink`), its documents (:mod:`.docs`) and its OpenSearch client (:mod:`.client`)."""

from worker.sinks.search.sink import SearchSink, create

__all__ = ["SearchSink", "create"]
