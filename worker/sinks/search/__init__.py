"""The search sink (:mod:`.sink`), its documents (:mod:`.docs`) and its OpenSearch client (:mod:`.client`).

Registry entry (see :mod:`worker.sinks.registry`): enabled by ``[search]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.sinks.search.sink import NAME, SearchSink, create

if TYPE_CHECKING:
    from worker.config import Config

__all__ = ["EMULATORS", "NAME", "REPLAY_DEFAULT", "SearchSink", "create", "enabled", "render"]

REPLAY_DEFAULT = True
EMULATORS = frozenset({"opensearch"})


def enabled(cfg: Config) -> bool:
    return cfg.search is not None


def render(report: Any) -> list[str]:
    """The number of documents per index."""
    return [f"    index {index}: {len(docs)} documents" for index, docs in report.items()]
