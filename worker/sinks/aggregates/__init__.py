"""The aggregates sink (:mod:`.sink`), its definitions (:mod:`.spec`) and its DynamoDB rows (:mod:`.store`)."""

from worker.sinks.aggregates.sink import AggregatesSink, create

__all__ = ["AggregatesSink", "create"]
