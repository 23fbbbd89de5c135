"""Rebuild administration: recomputing aggregates from the archive into an empty table."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from worker.aws import error_code
from worker.errors import FatalError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from worker.config import Config

__all__ = ["rebuild_config", "require_empty"]


def rebuild_config(cfg: Config, names: tuple[str, ...], into: str | None) -> tuple[Config, list[str]]:
    """The configuration with only the aggregates ``names`` (each into ``into`` if given), and their tables."""
    chosen = [a for a in cfg.aggregates if a.name in names]
    chosen = [dataclasses.replace(a, table=into) if into else a for a in chosen]
    return dataclasses.replace(cfg, aggregates=chosen), sorted({a.table for a in chosen})


def require_empty(ddb: DynamoDBClient, tables: list[str]) -> None:
    """Refuse to rebuild into a table that holds anything (a missing one is created)."""
    for table in tables:
        try:
            resp: Any = ddb.scan(TableName=table, Limit=1, ConsistentRead=True)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                continue
            raise FatalError(f"--rebuild: cannot check table {table!r}: {exc}") from exc
        if resp.get("Items"):
            raise FatalError(
                f"--rebuild: table {table!r} is not empty; rebuild into an empty table "
                f"(--into NEW_TABLE) or empty {table!r} first"
            )
