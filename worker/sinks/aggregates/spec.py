"""Aggregate definitions, compiled; what one item contributes; exact decimal sums.

Everything here is pure (no I/O): the sink, :func:`recompute` (the reference
the tests compare the tables with) and ``worker local``'s report share it, so a
row in a target table and a recomputation from the source items agree by
construction of the rule, not by coincidence.

**An item's contribution** to an aggregate (``None``: it contributes nothing):

* the item must pass ``where``: every condition holds on the item's own
  attributes (``channel = "web"`` equality, ``coupon = { exists = true }``
  presence, ``status = { in = ["paid", "shipped"] }`` one of, nested tables or
  quoted dotted keys for nested paths: ``"ship.city" = "Paris"``). Numbers
  compare by value, values of different types never match (``true`` is not 1);
* its group is the values under ``group_by`` (paths: ``ship.city``,
  ``lines[0].sku``). An item that lacks one follows ``missing_group``:
  ``"skip"`` (it contributes nothing) or ``"null"`` (that part of the group is
  null). An attribute that is present with the DynamoDB NULL value is a null
  group under both rules;
* it counts 1; each ``sum(path)`` adds the number under ``path``. Absent or
  NULL adds 0. Any other non-number (a string, even ``"12"``, a set, a map)
  adds 0 **and** is reported (:class:`Contribution.faults`): the sink parks the
  record that brought it, so the value is never silently ignored while the
  totals still equal a recomputation under this same rule;
* a group whose row key (below) would exceed DynamoDB's 1,024-byte sort key
  (very long group values) counts nowhere, and is reported the same way.

Arithmetic is exact: decimals add in a 400-digit context with inexact results
trapped (any sum of DynamoDB numbers, 38 significant digits in 1e-130..1e125,
is exact there). A total that needs more than 38 significant digits cannot be
stored in DynamoDB; :func:`fits_dynamodb` tells the sink to stop rather than
round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

from worker.attributes import Item, Value
from worker.canonical import number_text
from worker.errors import ConfigError
from worker.sinks.aggregates.values import (
    MISSING,
    ZERO,
    Path,
    Vector,
    add_vectors,
    group_key,
    is_zero,
    jsonable,
    parse_path,
    resolve,
    same_value,
)

MAX_SORT_KEY_BYTES = 1024

# Attribute names of a target row the sink owns (see worker.sinks.aggregates).
ROW_ATTRIBUTES = ("pk", "sk", "group", "count", "hwm", "updated_at")
WHERE_OPERATORS = frozenset({"exists", "eq", "in"})


class AggregateConfig(Protocol):
    """The shape of ``worker.config.AggregateSection`` (kept structural: no import cycle)."""

    @property
    def name(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def group_by(self) -> list[str]: ...
    @property
    def metrics(self) -> dict[str, str]: ...
    @property
    def where(self) -> dict[str, Any]: ...
    @property
    def missing_group(self) -> Literal["skip", "null"]: ...


# -- where ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One ``where`` condition on one path."""

    path: Path
    text: str
    exists: bool | None = None
    equals: tuple[Value, ...] = ()  # any of (empty: no equality test)

    def holds(self, item: Mapping[str, Value]) -> bool:
        v = resolve(item, self.path)
        if self.exists is not None and (v is not MISSING) != self.exists:
            return False
        if self.equals:
            return v is not MISSING and any(same_value(v, e) for e in self.equals)
        return True


def _config_value(v: Any, key: str) -> Value:
    """A TOML value in the decoded-attribute domain (numbers as exact decimals)."""
    if isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, list):
        return [_config_value(x, f"{key}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        return {str(k): _config_value(x, f"{key}.{k}") for k, x in v.items()}
    raise ConfigError(key, f"unsupported value {v!r} (strings, numbers, booleans, arrays, tables)")


def compile_where(where: Mapping[str, Any], key: str, base: str = "") -> list[Condition]:
    out: list[Condition] = []
    for name, spec in where.items():
        text = f"{base}.{name}" if base else name
        k = f"{key}.{name}"
        if isinstance(spec, dict) and spec and not (set(spec) & WHERE_OPERATORS):
            out.extend(compile_where(spec, k, text))  # a nested table: a nested path
            continue
        path = parse_path(text, k)
        if not isinstance(spec, dict):
            out.append(Condition(path, text, equals=(_config_value(spec, k),)))
            continue
        unknown = set(spec) - WHERE_OPERATORS
        if unknown:
            raise ConfigError(k, f"unknown operator(s) {sorted(unknown)} (known: exists, eq, in)")
        exists = spec.get("exists")
        if exists is not None and not isinstance(exists, bool):
            raise ConfigError(f"{k}.exists", f"must be true or false, got {exists!r}")
        equals: list[Value] = []
        if "eq" in spec:
            equals.append(_config_value(spec["eq"], f"{k}.eq"))
        if "in" in spec:
            options = spec["in"]
            if not isinstance(options, list) or not options:
                raise ConfigError(f"{k}.in", "must be a non-empty array")
            equals.extend(_config_value(x, f"{k}.in[{i}]") for i, x in enumerate(options))
        if exists is False and equals:
            raise ConfigError(k, "exists = false cannot be combined with eq/in")
        out.append(Condition(path, text, exists=exists, equals=tuple(equals)))
    return out


# -- aggregates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    path: Path | None  # None: count
    text: str  # the summed path as written ("" for count)


@dataclass(frozen=True)
class Fault:
    """A value the rule could not use as given: the record that brings it is parked."""

    path: str  # the attribute path at fault
    reason: str


class Contribution(NamedTuple):
    """What one item adds to one aggregate: one row, a count of 1 and its sums."""

    key: str  # the row's sort key (:func:`group_key`)
    group: tuple[Value, ...]
    vector: Vector
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True)
class Aggregate:
    """A compiled ``[[aggregates]]`` entry."""

    name: str
    table: str
    group_by: tuple[str, ...]
    group_paths: tuple[Path, ...]
    where: tuple[Condition, ...]
    metrics: tuple[Metric, ...]
    sums: tuple[Metric, ...]  # the sum metrics, in vector order (after the count)
    missing_group: Literal["skip", "null"]

    @property
    def names(self) -> frozenset[str]:
        """The top-level attributes a contribution reads (an item's other attributes never
        change it)."""
        paths = (*self.group_paths, *(m.path for m in self.sums if m.path), *(c.path for c in self.where))
        return frozenset(str(p[0]) for p in paths)

    def contribution(self, item: Mapping[str, Value] | None) -> Contribution | None:
        """What ``item`` adds (``None``: nothing: no item, filtered out, or group skipped)."""
        if item is None or (self.where and not all(c.holds(item) for c in self.where)):
            return None
        group: list[Value] = []
        for path in self.group_paths:
            v = resolve(item, path)
            if v is MISSING:
                if self.missing_group == "skip":
                    return None
                v = None
            group.append(v)
        vector = [ONE]
        faults: list[Fault] = []
        for m in self.sums:
            assert m.path is not None
            v = resolve(item, m.path)
            if isinstance(v, Decimal):
                vector.append(v)
                continue
            vector.append(ZERO)
            if v is not MISSING and v is not None:
                faults.append(Fault(m.text, f"sum({m.text}) over a non-number ({_type_name(v)}) counted as 0"))
        key = group_key(group)
        size = len(key.encode("utf-8"))
        if size > MAX_SORT_KEY_BYTES:  # no row can hold this group: the item counts nowhere
            reason = f"group key of {size} bytes exceeds DynamoDB's {MAX_SORT_KEY_BYTES}: not counted"
            return Contribution(key, tuple(group), self.zero(), (Fault(self.group_by[0], reason),))
        return Contribution(key, tuple(group), tuple(vector), tuple(faults))

    def group_dict(self, group: Sequence[Value]) -> dict[str, Any]:
        return {name: jsonable(v) for name, v in zip(self.group_by, group, strict=True)}

    def metrics_dict(self, vector: Vector) -> dict[str, Any]:
        """Report metrics: counts as ints, sums as canonical decimal text."""
        out: dict[str, Any] = {}
        sums = {m.name: v for m, v in zip(self.sums, vector[1:], strict=True)}
        for m in self.metrics:
            out[m.name] = int(vector[0]) if m.path is None else number_text(sums[m.name])
        return out

    def zero(self) -> Vector:
        return (ZERO,) * (1 + len(self.sums))


ONE = Decimal(1)


def _type_name(v: Value) -> str:
    if isinstance(v, str):
        return "S"
    if isinstance(v, bool):
        return "BOOL"
    if isinstance(v, bytes):
        return "B"
    if isinstance(v, dict):
        return "M"
    if isinstance(v, list):
        return "L"
    if isinstance(v, frozenset):
        return "SET"
    return type(v).__name__


def compile_aggregate(section: AggregateConfig, prefix: str = "aggregates") -> Aggregate:
    """Compile and validate one section; raises :class:`ConfigError` naming the key."""
    if not section.table:
        raise ConfigError(f"{prefix}.table", "must not be empty")
    if not section.group_by:
        raise ConfigError(f"{prefix}.group_by", "needs at least one attribute path")
    if len(set(section.group_by)) != len(section.group_by):
        raise ConfigError(f"{prefix}.group_by", "lists a path twice")
    paths = tuple(parse_path(p, f"{prefix}.group_by[{i}]") for i, p in enumerate(section.group_by))
    if not section.metrics:
        raise ConfigError(f"{prefix}.metrics", "needs at least one metric")
    metrics: list[Metric] = []
    for name, spec in section.metrics.items():
        key = f"{prefix}.metrics.{name}"
        s = spec.replace(" ", "")
        if s == "count":
            metric = Metric(name, None, "")
        elif s.startswith("sum(") and s.endswith(")") and len(s) > 5:
            metric = Metric(name, parse_path(s[4:-1], key), s[4:-1])
        else:
            raise ConfigError(key, f"must be 'count' or 'sum(attribute path)', got {spec!r}")
        if not name or (name in ROW_ATTRIBUTES and not (name == "count" and metric.path is None)):
            raise ConfigError(key, f"the name {name!r} is taken by the row layout ({', '.join(ROW_ATTRIBUTES)})")
        metrics.append(metric)
    if section.missing_group not in ("skip", "null"):
        raise ConfigError(f"{prefix}.missing_group", "must be 'skip' or 'null'")
    return Aggregate(
        name=section.name,
        table=section.table,
        group_by=tuple(section.group_by),
        group_paths=paths,
        where=tuple(compile_where(section.where, f"{prefix}.where")),
        metrics=tuple(metrics),
        sums=tuple(m for m in metrics if m.path is not None),
        missing_group=section.missing_group,
    )


class RowDelta(NamedTuple):
    """What one change does to one row: ``vector`` added to aggregate number ``number``'s group ``key``."""

    number: int  # the aggregate's index in the sink's list
    key: str
    group: tuple[Value, ...]
    vector: Vector


def deltas(
    aggregates: Sequence[Aggregate],
    old: Mapping[str, Value] | None,
    new: Mapping[str, Value] | None,
    *,
    only: Sequence[int] | None = None,
) -> tuple[list[RowDelta], list[tuple[str, Fault]]]:
    """The row deltas of replacing ``old`` by ``new`` (either may be ``None``): minus the old
    contribution, plus the new one, netted when both land in one row (zero deltas are dropped).

    Also the new image's faults as ``(aggregate name, fault)``: an old image's
    faults were reported when it was new, and taking a 0 away is exact. ``only`` limits
    the work to those aggregates (by index): the others' deltas are known to be zero.
    """
    out: list[RowDelta] = []
    faults: list[tuple[str, Fault]] = []
    for index in range(len(aggregates)) if only is None else only:
        agg = aggregates[index]
        before = agg.contribution(old)
        after = agg.contribution(new)
        if after is not None:
            faults.extend((agg.name, f) for f in after.faults)
        if before is not None and after is not None and before.key == after.key:
            parts = [(after, add_vectors(after.vector, before.vector, -1))]
        else:
            parts = []
            if before is not None:
                parts.append((before, add_vectors(agg.zero(), before.vector, -1)))
            if after is not None:
                parts.append((after, after.vector))
        out.extend(RowDelta(index, c.key, c.group, v) for c, v in parts if not is_zero(v))
    return out, faults


def recompute(
    aggregate: Aggregate | AggregateConfig, items: Iterable[Mapping[str, Value] | Item]
) -> list[dict[str, Any]]:
    """The report of one aggregate recomputed from the source table's items (the reference).

    Same shape and order as ``AggregatesSink.report()[name]``: groups with no
    items are absent, groups sorted by their row key.
    """
    agg = aggregate if isinstance(aggregate, Aggregate) else compile_aggregate(aggregate)
    totals: dict[str, tuple[tuple[Value, ...], Vector]] = {}
    for item in items:
        c = agg.contribution(item)
        if c is None:
            continue
        group, vec = totals.get(c.key, (c.group, agg.zero()))
        totals[c.key] = (group, add_vectors(vec, c.vector))
    return [
        {"group": agg.group_dict(group), "metrics": agg.metrics_dict(vec)}
        for _, (group, vec) in sorted(totals.items())
        if not is_zero(vec)
    ]
