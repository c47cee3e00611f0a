"""The search filters of ``filters.py`` as SQL over a JSONB ``metadata`` column.

The same filter must select the same documents on both backends: the embedded store
runs :func:`deployments.collections.filters.compile_filter`'s predicate, PostgreSQL runs
the clause built here (``tests/unit/test_sql_filters.py`` checks they agree on random
metadata and filters). A filter is validated by ``compile_filter`` first, so a malformed
one is the same 400 on both.

Field names and values are always query parameters (``metadata -> %s``), never spliced
into the SQL text: a field called ``'; DROP TABLE documents; --`` is a key like any other.
The operators follow the Python semantics: ``true`` is not ``1`` (JSONB equality keeps
types apart), ranges compare numbers with numbers and ISO-8601 dates with dates (a
string that is not such a date never matches), ``$contains`` ignores case.
"""

from __future__ import annotations

import json
from typing import Any

from deployments.collections.filters import compile_filter

#: What counts as an ISO-8601 date or date-time here (what Python's ``fromisoformat``
#: reads, and no more: PostgreSQL alone would also read "March 5").
ISO_DATE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
_RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _value(value: Any) -> str:
    return json.dumps(value)


def _range(field: str, op: str, operand: Any, column: str) -> tuple[str, list[Any]]:
    sign = _RANGE_SQL[op]
    if isinstance(operand, (int, float)) and not isinstance(operand, bool):
        return (f"(jsonb_typeof({column} -> %s) = 'number' AND ({column} ->> %s)::numeric {sign} %s)",
                [field, field, operand])
    # A date: the stored text must look like one before it is cast (a cast that fails
    # would fail the whole query); naive times are UTC, as in filters.py.
    stored = f"({column} ->> %s)"
    return (f"(jsonb_typeof({column} -> %s) = 'string' AND length({stored}) <= 40 AND {stored} ~ %s AND "
            f"llmgraph_iso_time({stored}) {sign} llmgraph_iso_time(%s))",
            [field, field, field, ISO_DATE, field, operand])


def _contains(field: str, operand: Any, column: str) -> tuple[str, list[Any]]:
    if isinstance(operand, str):
        return (f"(CASE jsonb_typeof({column} -> %s) "
                f"WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({column} -> %s) item "
                f"WHERE jsonb_typeof(item) = 'string' AND lower(item #>> '{{}}') = lower(%s)) "
                f"WHEN 'string' THEN strpos(lower({column} ->> %s), lower(%s)) > 0 ELSE false END)",
                [field, field, operand, field, operand])
    return (f"(jsonb_typeof({column} -> %s) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({column} -> %s) item "
            f"WHERE item = %s::jsonb))", [field, field, _value(operand)])


def sql_filter(spec: dict[str, Any] | None, column: str = "metadata") -> tuple[str, list[Any]]:
    """A SQL condition and its parameters for ``spec`` over the JSONB ``column``.

    Raises:
        FilterError: the filter is malformed (as :func:`compile_filter` says).
    """
    compile_filter(spec)  # the one validation, and its errors
    if not spec:
        return "true", []
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, args: list[Any]) -> None:
        clauses.append(clause)
        params.extend(args)

    for field, condition in spec.items():
        if not isinstance(condition, dict):
            add(f"({column} -> %s) = %s::jsonb", [field, _value(condition)])
            continue
        for op, operand in condition.items():
            if op == "$in":
                values = [_value(v) for v in operand]
                add(f"(CASE jsonb_typeof({column} -> %s) WHEN 'array' THEN EXISTS (SELECT 1 FROM "
                    f"jsonb_array_elements({column} -> %s) item WHERE item = ANY(%s::jsonb[])) "
                    f"ELSE coalesce(({column} -> %s) = ANY(%s::jsonb[]), false) END)", [field, field, values, field, values])
            elif op == "$ne":
                add(f"coalesce(({column} -> %s) <> %s::jsonb, true)", [field, _value(operand)])
            elif op in _RANGE_SQL:
                add(*_range(field, op, operand, column))
            else:  # $contains
                add(*_contains(field, operand, column))
    return " AND ".join(clauses), params


#: Reads an ISO-8601 text as a UTC time; NULL when PostgreSQL cannot (the pattern above
#: has already kept out everything Python would not read).
ISO_TIME_FUNCTION = """
CREATE OR REPLACE FUNCTION llmgraph_iso_time(value text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (CASE WHEN value ~ '(Z|[+-]\\d{2}(:?\\d{2})?)$' AND value ~ 'T|\\s\\d'
                 THEN value::timestamptz ELSE (value::timestamp AT TIME ZONE 'UTC') END);
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""
