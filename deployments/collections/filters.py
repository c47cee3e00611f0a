"""Metadata filters for search: equality, ``$in`` and numeric ranges.

A filter is ``{field: condition}``, all conditions must hold. A condition is a plain
value (equality), ``{"$in": [values]}``, ``{"$ne": value}``, or any of ``$gt``, ``$gte``,
``$lt``, ``$lte`` with a number. Filters are checked when the request arrives, so a
malformed one is a 400 naming the field, never a silent match-nothing.
"""

from __future__ import annotations

from typing import Any, Callable

Scalar = (str, int, float, bool)
_RANGE = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}
MAX_FILTER_FIELDS = 16
MAX_IN_VALUES = 256


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
    return isinstance(value, Scalar) and _key(value) in keys


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
                if not _is_number(operand):
                    raise FilterError(f"filter.{field}.{op} needs a number", field)
                compare = _RANGE[op]
                checks.append(lambda m, f=field, v=operand, c=compare: _is_number(m.get(f)) and c(m[f], v))
            else:
                raise FilterError(f"filter.{field}: unknown operator {op!r} (use $in, $ne, $gt, $gte, $lt, $lte)", field)
    return lambda metadata: all(check(metadata) for check in checks)
