"""Error classes of the worker; each maps to exactly one action.

The pipeline never inspects messages: it looks at ``error.action``.

* ``RETRY``: transient (throttling, 5xx, connection). Retried with backoff and
  jitter; the checkpoint waits. Exhausted retries become a stop.
* ``PARK``: this one record can never succeed as it is (malformed, a value a
  sink cannot accept). It goes to the dead-letter location with the error and
  the full record; the rest of the batch continues.
* ``STOP``: the process cannot continue safely (bad configuration, a sink that
  lost durability, retries exhausted). Nothing past the last checkpoint is
  acknowledged; the process exits non-zero so the shard resumes from there.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class Action(enum.Enum):
    RETRY = "retry"
    PARK = "park"
    STOP = "stop"


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""

    action: ClassVar[Action] = Action.STOP


class RetryableError(WorkerError):
    """A transient failure; ``retry_after`` (seconds) is a hint from the server, if any."""

    action = Action.RETRY

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecordError(WorkerError):
    """One record cannot be processed; park it.

    ``where`` names the place: ``file:line`` or ``shard/sequence``.
    ``field`` names the part of the record at fault, when known.
    ``payload`` is the full original record (whatever the source gave), so the
    dead letter holds everything needed to replay it after a fix.
    """

    action = Action.PARK

    def __init__(
        self,
        message: str,
        *,
        where: str = "",
        field: str | None = None,
        payload: Any = None,
        sink: str | None = None,
        shard_id: str | None = None,
        sequence_number: str | None = None,
        raw: bytes | str | None = None,
        applied: bool = False,
    ) -> None:
        self.reason = message
        self.where = where
        self.field = field
        self.payload = payload
        self.sink = sink
        self.shard_id = shard_id  # for replays: the record's shard and sequence number, when known
        self.sequence_number = sequence_number
        self.raw = raw  # the record's text as delivered, when known (dead letters fall back to it)
        self.applied = applied  # the sink applied the record anyway (by a documented rule): never replay it there
        text = message
        if field:
            text = f"{field}: {text}"
        if where:
            text = f"{where}: {text}"
        super().__init__(text)

    def located(self, where: str, payload: Any = None) -> RecordError:
        """The same error with its place (and payload) filled in where they were missing."""
        return RecordError(
            self.reason,
            where=self.where or where,
            field=self.field,
            payload=self.payload if self.payload is not None else payload,
            sink=self.sink,
            shard_id=self.shard_id,
            sequence_number=self.sequence_number,
            raw=self.raw,
            applied=self.applied,
        )


class FatalError(WorkerError):
    """Unrecoverable: stop without acknowledging anything past the last checkpoint."""

    action = Action.STOP


class ConfigError(FatalError):
    """Invalid configuration; ``key`` is the dotted key at fault (``search.url``)."""

    def __init__(self, key: str, reason: str, *, source: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {reason}")


def action_of(exc: BaseException) -> Action:
    """The action for any exception: unknown exceptions stop (never silently acknowledge)."""
    if isinstance(exc, WorkerError):
        return exc.action
    return Action.STOP
