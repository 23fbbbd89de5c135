"""A replay's resume state: per stream, the last sequence number the pipeline reported durable."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ConfigError, FatalError
from worker.files import write_atomic

__all__ = ["State", "iso"]

UTC = dt.UTC


def iso(when: dt.datetime) -> str:
    """``when`` in UTC as ISO 8601 with a ``Z``."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class State:
    """Progress of one run, saved atomically after every flush of the pipeline.

    ``streams`` holds only what :meth:`worker.pipeline.Pipeline.flush` returned
    (the durable position), never what was merely fed.
    """

    path: Path | None
    run: dict[str, Any]
    streams: dict[str, str] = field(default_factory=dict)  # "table/stream" -> last durable sequence
    objects: dict[str, str] = field(default_factory=dict)  # key -> ETag of the version done
    rebuild_checked: list[str] = field(default_factory=list)  # tables found empty when the rebuild began
    complete: bool = False

    @classmethod
    def open(cls, path: Path | None, run: dict[str, Any], resume: bool, log: Any) -> tuple[State, bool]:
        """The state to use and whether it continues an earlier run."""
        import orjson

        if path is None or not path.exists():
            if resume:
                log.warning("nothing to resume: no progress file; starting over", state=str(path))
            return cls(path, run), False
        if not resume:
            log.info("earlier progress ignored (use --resume to continue it)", state=str(path))
            return cls(path, run), False
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise FatalError(f"cannot read progress file {path}: {exc}") from exc
        if data.get("run") != run:
            raise ConfigError("--resume", f"{path} belongs to another run ({data.get('run')})")
        return cls(
            path,
            run,
            dict(data.get("streams", {})),
            dict(data.get("objects", {})),
            list(data.get("rebuild_checked", [])),
            bool(data.get("complete")),
        ), True

    def save(self) -> None:
        import orjson

        if self.path is None:
            return
        body = {
            "run": self.run,
            "updated_at": iso(dt.datetime.now(UTC)),
            "complete": self.complete,
            "rebuild_checked": self.rebuild_checked,
            "streams": self.streams,
            "objects": self.objects,
        }
        write_atomic(self.path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
