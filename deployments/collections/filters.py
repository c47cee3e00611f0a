"""Metadata filters for search: equality, membership, ranges, and contains.

A filter is ``{field: condition}``, all conditions must hold. A condition is a plain
value (equality), ``{"$in": [values]}`` (the field's value is one of them, or a list
field holds one of them), ``{"$ne": value}``, any of ``$gt``, ``$gte``, ``$lt``, ``$lte``
with a number or an ISO-8601 date (``"2026-03-01"``, compared as dates), or
``{"$contains": value}``: a list field holds the value, or a text field holds it as a
substring (both ignoring case). Filters are checked when the request arrives, so a
malformed one is a 400 naming the field, never a silent match-nothing. Every check is
linear in the document's metadata, which is bounded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Optional

Scalar = (str, int, float, bool)
_RANGE = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}
MAX_FILTER_FIELDS = 16
MAX_IN_VALUES = 256
#: Longest ``$contains`` operand, and longest date string read.
MAX_CONTAINS_CHARS = 256
_MAX_DATE_CHARS = 40


class FilterError(ValueError):
    """A malformed filter; ``field`` names the offending key."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    """Equality where ``True`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _key(value: Any) -> tuple[bool, Any]:
    """A hashable form under which two scalars match exactly when :func:`_equal` says so."""
    return (isinstance(value, bool), value)


def _member(value: Any, keys: frozenset) -> bool:
    if isinstance(value, list):
        return any(isinstance(item, Scalar) and _key(item) in keys for item in value)
    return isinstance(value, Scalar) and _key(value) in keys


def _as_date(value: Any) -> Optional[dt.datetime]:
    """An ISO-8601 date or date-time as a UTC date-time (a date is its midnight), or None."""
    if not isinstance(value, str) or len(value) > _MAX_DATE_CHARS:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _contains(value: Any, needle: Any) -> bool:
    """A list holds ``needle`` (strings ignoring case), or a text holds it as a substring."""
    if isinstance(value, list):
        if isinstance(needle, str):
            folded = needle.casefold()
            return any(isinstance(item, str) and item.casefold() == folded for item in value)
        return any(_equal(item, needle) for item in value)
    if isinstance(value, str) and isinstance(needle, str):
        return needle.casefold() in value.casefold()
    return False


def _range_check(field: str, op: str, operand: Any) -> Callable[[dict[str, Any]], bool]:
    compare = _RANGE[op]
    if _is_number(operand):
        return lambda m: _is_number(m.get(field)) and compare(m[field], operand)
    bound = _as_date(operand)
    if bound is None:
        raise FilterError(f"filter.{field}.{op} needs a number or an ISO-8601 date", field)

    def check(metadata: dict[str, Any]) -> bool:
        value = _as_date(metadata.get(field))
        return value is not None and compare(value, bound)
    return check


def compile_filter(spec: dict[str, Any] | None) -> Callable[[dict[str, Any]], bool]:
    """A predicate over a document's metadata.

    Raises:
        FilterError: the filter is malformed.
    """
    if not spec:
        return lambda metadata: True
    if not isinstance(spec, dict):
        raise FilterError("filter must be an object of field conditions", "filter")
    if len(spec) > MAX_FILTER_FIELDS:
        raise FilterError(f"at most {MAX_FILTER_FIELDS} fields per filter", "filter")
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for field, condition in spec.items():
        if not isinstance(condition, dict):
            if not isinstance(condition, Scalar):
                raise FilterError(f"filter.{field}: equality needs a string, number or boolean", field)
            checks.append(lambda m, f=field, v=condition: f in m and _equal(m[f], v))
            continue
        if not condition:
            raise FilterError(f"filter.{field}: empty condition", field)
        for op, operand in condition.items():
            if op == "$in":
                if not isinstance(operand, list) or not operand or len(operand) > MAX_IN_VALUES or not all(isinstance(x, Scalar) for x in operand):
                    raise FilterError(f"filter.{field}.$in needs a list of 1-{MAX_IN_VALUES} scalars", field)
                # A set, built once: each document is a lookup, not a scan of the list.
                checks.append(lambda m, f=field, keys=frozenset(map(_key, operand)): f in m and _member(m[f], keys))
            elif op == "$ne":
                if not isinstance(operand, Scalar):
                    raise FilterError(f"filter.{field}.$ne needs a scalar", field)
                checks.append(lambda m, f=field, v=operand: not (f in m and _equal(m[f], v)))
            elif op in _RANGE:
                checks.append(_range_check(field, op, operand))
            elif op == "$contains":
                if not isinstance(operand, Scalar) or (isinstance(operand, str) and not 0 < len(operand) <= MAX_CONTAINS_CHARS):
                    raise FilterError(f"filter.{field}.$contains needs a scalar (a string of 1-{MAX_CONTAINS_CHARS} characters)", field)
                checks.append(lambda m, f=field, v=operand: f in m and _contains(m[f], v))
            else:
                raise FilterError(f"filter.{field}: unknown operator {op!r} (use $in, $ne, $gt, $gte, $lt, $lte, $contains)",
                                  field)
    return lambda metadata: all(check(metadata) for check in checks)
