"""The aggregates sink (:mod:`.sink`), its definitions (:mod:`.spec`) and its DynamoDB rows (:mod:`.store`).

Registry entry (see :mod:`worker.sinks.registry`): enabled by ``[[aggregates]]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.sinks.aggregates.sink import SINK_NAME as NAME
from worker.sinks.aggregates.sink import AggregatesSink, create

if TYPE_CHECKING:
    from worker.config import Config

__all__ = ["EMULATORS", "NAME", "REPLAY_DEFAULT", "AggregatesSink", "create", "enabled", "render"]

REPLAY_DEFAULT = True
EMULATORS = frozenset({"aws"})


def enabled(cfg: Config) -> bool:
    return bool(cfg.aggregates)


def render(report: Any) -> list[str]:
    """Per aggregate its groups, one line each with the metrics."""
    lines: list[str] = []
    for agg, rows in report.items():
        lines.append(f"    {agg}: {len(rows)} groups")
        for row in rows:
            group = ", ".join(f"{k}={v}" for k, v in row.get("group", {}).items())
            metrics = "  ".join(f"{k}={v}" for k, v in row.get("metrics", {}).items())
            lines.append(f"      {group or '(all)':<28} {metrics}")
    return lines
