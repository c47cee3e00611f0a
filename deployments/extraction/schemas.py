"""JSON schemas for stage 4: what the LLM may emit, and which caller schemas it can honour.

The decoder (xgrammar inside vLLM) enforces the schema token by token, so the schema
sent to it is also the guarantee of termination: every free string gets an explicit
length bound and every array an item bound, and the worst-case size of the output is
known before the request is sent (:func:`token_budget`). A caller's own schema is
checked against the keywords the decoder cannot enforce first, so that a request which
could not be honoured gets a 422 naming the keyword instead of output that might not
validate.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Iterator, Optional

from serve.kernel.limits import MAX_REGEX_CHARS, MAX_SCHEMA_BYTES, nests_deeper_than
from deployments.extraction.record import (
    CURRENCY_CODES,
    FIELDS,
    EMPLOYMENT_TYPES,
    MAX_EXPERIENCE_YEARS,
    MAX_SALARY,
    PERIODS,
    TEXT_LIMITS,
    WORKPLACE_TYPES,
)

#: Items an array may hold in decoded output when the caller's schema sets no bound.
DEFAULT_MAX_ITEMS = 8
#: Characters a free string may hold in decoded output when the caller sets no bound.
DEFAULT_MAX_STRING = 80
#: Nesting depth accepted in a caller's schema.
MAX_SCHEMA_DEPTH = 8
#: JSON nesting (objects and arrays) looked at before any validator recurses into a
#: caller's schema: a schema level takes two (``properties`` and the sub-schema), and a
#: validator recurses through several frames per level, so a deep schema must be refused
#: before it is validated (a 30-level one made jsonschema's meta-validation overflow the
#: stack).
MAX_JSON_DEPTH = 2 * MAX_SCHEMA_DEPTH + 4
#: A caller schema's largest size and longest ``pattern`` are chat's bounds
#: (``serve/kernel/limits.py``: MAX_SCHEMA_BYTES, MAX_REGEX_CHARS).
#: ``$ref`` a caller's schema may hold (each is followed when looking for cycles).
MAX_REFS = 64
#: Keywords the decoder cannot enforce; a schema using one is refused with a 422.
UNSUPPORTED_KEYWORDS = frozenset({
    "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
    "unevaluatedProperties", "unevaluatedItems", "patternProperties", "propertyNames",
    "uniqueItems", "contains", "minContains", "maxContains", "multipleOf",
    "$dynamicRef", "$dynamicAnchor", "$recursiveRef",
})
#: String formats the decoder can generate (the others would not be enforced).
SUPPORTED_FORMATS = frozenset({
    "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid",
    "uri", "uri-reference", "uri-template",
})
# Printable text without quotes or backslashes: what a bounded free string may hold.
_SAFE_CHARS = r'[^\x00-\x1f"\\]'
_VISIBLE_CHAR = r'[^\x00-\x20"\\]'


class SchemaRefused(ValueError):
    """A caller's schema the decoder cannot honour; ``keyword`` and ``path`` say where."""

    def __init__(self, message: str, *, keyword: str, path: str) -> None:
        super().__init__(message)
        self.keyword = keyword
        self.path = path


def bounded_string(min_chars: int, max_chars: int) -> dict[str, Any]:
    """A string of ``min_chars``..``max_chars`` printable characters, as a decoder pattern.

    A pattern rather than ``maxLength``: xgrammar drops length bounds when a pattern is
    also present, and a pattern also keeps control characters out.
    """
    if min_chars < 1:
        return {"type": "string", "pattern": f"^{_SAFE_CHARS}{{0,{max_chars}}}$"}
    # A non-blank first character: a required string is never only whitespace.
    return {"type": "string", "pattern": f"^{_VISIBLE_CHAR}{_SAFE_CHARS}{{{min_chars - 1},{max(min_chars, max_chars) - 1}}}$"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def job_posting_gap_schema(fields: list[str], *, scale: float = 1.0) -> dict[str, Any]:
    """The decoding schema for the ``job_posting`` fields still missing.

    Args:
        fields: The field names to ask for.
        scale: Shrinks every text bound (a repair retry after truncated output uses 0.5).
    """

    def text(name: str) -> dict[str, Any]:
        return bounded_string(1, max(4, int(TEXT_LIMITS[name] * scale)))

    integer = lambda high: {"type": "integer", "minimum": 0, "maximum": high}  # noqa: E731
    number = lambda high: {"type": "number", "minimum": 0, "maximum": high}  # noqa: E731
    by_field: dict[str, dict[str, Any]] = {
        "title": text("title"),
        "company": _nullable(text("company")),
        "location": _nullable(text("location")),
        "remote": _nullable({"type": "boolean"}),
        "workplace_type": _nullable({"type": "string", "enum": list(WORKPLACE_TYPES)}),
        "salary_min": _nullable(number(MAX_SALARY)),
        "salary_max": _nullable(number(MAX_SALARY)),
        "salary_currency": _nullable({"type": "string", "enum": list(CURRENCY_CODES)}),
        "salary_period": _nullable({"type": "string", "enum": list(PERIODS)}),
        "employment_type": _nullable({"type": "string", "enum": list(EMPLOYMENT_TYPES)}),
        "experience_years": _nullable(integer(MAX_EXPERIENCE_YEARS)),
        "skills": _nullable({"type": "array", "items": text("skill"), "maxItems": max(1, int(10 * scale))}),
        "date_posted": _nullable({"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}),
        "apply_url": _nullable({"type": "string", "pattern": rf"^https?://[^\x00-\x20\"\\]{{1,{max(12, int(200 * scale))}}}$"}),
    }
    return {
        "type": "object",
        "properties": {name: by_field[name] for name in fields},
        "required": list(fields),
        "additionalProperties": False,
    }


# ------------------------------------------------------------ caller schemas
def _children(schema: dict[str, Any], path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """The sub-schemas of ``schema`` (not its property names), with their paths."""
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            yield sub, f"{path}/{key}/{name}"
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield schema[key], f"{path}/{key}"
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            yield sub, f"{path}/{key}/{i}"


def _walk(schema: Any, path: str = "#", depth: int = 0) -> Iterator[tuple[dict[str, Any], str, int]]:
    if not isinstance(schema, dict):
        return
    yield schema, path, depth
    for sub, sub_path in _children(schema, path):
        yield from _walk(sub, sub_path, depth + 1)


def _every_object(schema: Any) -> Iterator[tuple[dict[str, Any], str, tuple[str, ...]]]:
    """Every JSON object anywhere in ``schema``, under any keyword, known or not, with its
    path (for messages) and its location as reference tokens.

    ``_walk`` follows the keywords that hold sub-schemas; a ``$ref`` can point anywhere
    in the document (``#/x-anything/0``), so references are checked on every object.
    Iterative: the caller's nesting cannot exhaust the stack.
    """
    stack: list[tuple[Any, str, tuple[str, ...]]] = [(schema, "#", ())]
    while stack:
        node, path, tokens = stack.pop()
        if isinstance(node, dict):
            yield node, path, tokens
            stack.extend((v, f"{path}/{k}", (*tokens, str(k))) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, f"{path}/{i}", (*tokens, str(i))) for i, v in enumerate(node) if isinstance(v, (dict, list)))


def linear_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2, whose matching time is linear in the text.

    Python's ``re`` backtracks: ``^(a|a)*c$`` over forty ``a`` kept a worker busy for
    90 s. RE2 has no lookaround or backreferences; such a pattern raises ``ValueError``.
    """
    import re2

    options = re2.Options()
    options.log_errors = False  # a refused pattern is the caller's 400, not a log line
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(str(exc)) from None


def _linear_pattern_keyword(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """jsonschema's ``pattern`` keyword, matched by RE2 (:func:`linear_pattern`)."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not linear_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def caller_validator(schema: dict[str, Any]) -> Any:
    """A validator for a caller's schema that can never fetch anything and never backtracks.

    jsonschema's default registry retrieves unknown URIs (any scheme, ``file://``
    included, without a timeout); an empty ``referencing.Registry`` resolves only
    what the schema itself holds and raises ``Unresolvable`` for anything else. Its
    ``pattern`` keyword runs on Python's backtracking ``re``; here it runs on RE2.
    """
    from jsonschema import Draft202012Validator, validators
    from referencing import Registry

    linear = validators.extend(Draft202012Validator, {"pattern": _linear_pattern_keyword})
    return linear(schema, registry=Registry())


def _pointer_tokens(ref: str) -> tuple[str, ...]:
    """The reference tokens of a local ``$ref`` (``#/a/b~1c`` -> ``("a", "b/c")``)."""
    body = ref[1:].lstrip("/")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in body.split("/")) if body else ()


def _ref_cycle(refs: list[tuple[tuple[str, ...], str]]) -> Optional[str]:
    """A ``$ref`` that leads back to itself, or None.

    ``refs`` holds each reference's location (tokens) and target. A target's sub-schema
    holds every reference located under it; following them from a target that comes back
    to one still being followed is a cycle (``#`` from inside the schema, two ``$defs``
    that name each other). The decoder would have to unfold such a schema forever.
    """
    targets = {ref: _pointer_tokens(ref) for _, ref in refs}
    inside = {ref: [r for loc, r in refs if loc[:len(tokens)] == tokens] for ref, tokens in targets.items()}
    state: dict[str, int] = {}  # 1: being followed, 2: done
    for start in inside:
        if state.get(start):
            continue
        stack = [(start, iter(inside[start]))]
        state[start] = 1
        while stack:
            ref, following = stack[-1]
            nxt = next(following, None)
            if nxt is None:
                state[ref] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return nxt
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(inside[nxt])))
    return None


def _check_references(schema: dict[str, Any]) -> None:
    """Every ``$ref`` is local, resolves inside the schema and leads nowhere it came from;
    no nested ``$id``."""
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    resolver = None
    refs: list[tuple[tuple[str, ...], str]] = []
    for node, path, location in _every_object(schema):
        if path != "#" and isinstance(node.get("$id"), str):
            raise SchemaRefused(f"$id at {path} is not supported (embedded schema resources)", keyword="$id", path=path)
        ref = node.get("$ref")
        if ref is None:
            continue
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaRefused(f"$ref {ref!r} at {path} is not local; remote schemas are never fetched",
                                keyword="$ref", path=path)
        if resolver is None:
            root = {k: v for k, v in schema.items() if k != "$id"}
            resolver = Registry().with_resource("urn:caller", DRAFT202012.create_resource(root)).resolver("urn:caller")
        try:
            resolver.lookup(ref)
        except (Unresolvable, LookupError, ValueError, TypeError):
            raise SchemaRefused(f"$ref {ref!r} at {path} does not resolve inside the schema", keyword="$ref", path=path) from None
        refs.append((location, ref))
        if len(refs) > MAX_REFS:
            raise SchemaRefused(f"schema has more than {MAX_REFS} $ref", keyword="$ref", path=path)
    cycle = _ref_cycle(refs)
    if cycle is not None:
        raise SchemaRefused(f"$ref {cycle!r} is recursive: the schema refers back into itself, which the decoder "
                            "cannot bound", keyword="$ref", path=cycle)


def check_caller_schema(schema: Any) -> None:
    """Refuse a schema that is invalid or that the decoder cannot enforce.

    Raises:
        SchemaRefused: naming the keyword and the JSON pointer where it stands.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise SchemaRefused("schema must be a JSON object (a JSON schema)", keyword="type", path="#")
    if nests_deeper_than(schema, MAX_JSON_DEPTH):
        raise SchemaRefused(f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels", keyword="depth", path="#")
    if len(json.dumps(schema, default=str)) > MAX_SCHEMA_BYTES:
        raise SchemaRefused(f"schema is larger than {MAX_SCHEMA_BYTES} characters", keyword="size", path="#")
    try:
        Draft202012Validator.check_schema(schema)
    except RecursionError:
        raise SchemaRefused(f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels", keyword="depth", path="#") from None
    except SchemaError as exc:
        where = "#/" + "/".join(str(p) for p in exc.path) if exc.path else "#"
        raise SchemaRefused(f"schema is not a valid JSON schema at {where}: {exc.message}",
                            keyword=str(exc.validator), path=where) from None
    if schema.get("type") != "object":
        raise SchemaRefused('the schema\'s root must be {"type": "object", ...}', keyword="type", path="#")
    _check_references(schema)
    for node, path, depth in _walk(schema):
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaRefused(f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels at {path}", keyword="depth", path=path)
        for keyword in sorted(UNSUPPORTED_KEYWORDS & set(node)):
            raise SchemaRefused(f"schema keyword {keyword!r} at {path} cannot be enforced by the decoder",
                                keyword=keyword, path=path)
        pattern = node.get("pattern")
        if isinstance(pattern, str) and len(pattern) > MAX_REGEX_CHARS:
            raise SchemaRefused(f"pattern at {path} is longer than {MAX_REGEX_CHARS} characters",
                                keyword="pattern", path=path)
        if isinstance(pattern, str):
            try:
                linear_pattern(pattern)
            except ValueError as exc:
                raise SchemaRefused(f"pattern at {path} is not supported by the linear-time regex engine (RE2: "
                                    f"no lookaround, no backreferences): {exc}", keyword="pattern", path=path) from None
        fmt = node.get("format")
        if fmt is not None and fmt not in SUPPORTED_FORMATS:
            raise SchemaRefused(f"string format {fmt!r} at {path} cannot be enforced by the decoder",
                                keyword="format", path=path)
        if ("pattern" in node or "format" in node) and ("minLength" in node or "maxLength" in node):
            raise SchemaRefused(f"minLength/maxLength together with pattern or format at {path} cannot be enforced "
                                "by the decoder; put the bound in the pattern", keyword="maxLength", path=path)


def decoding_schema(schema: dict[str, Any], *, max_string: int = DEFAULT_MAX_STRING, max_items: int = DEFAULT_MAX_ITEMS) -> dict[str, Any]:
    """A copy of a caller's schema whose free strings and arrays are bounded.

    Whatever validates against the copy validates against the original: bounds only
    tighten (a caller's larger ``maxLength`` is lowered, never a smaller one raised).
    """
    result = copy.deepcopy(schema)
    for node, _, _ in _walk(result):
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        free_string = "string" in types and not ({"enum", "const", "pattern", "format"} & set(node))
        if free_string:
            low = int(node.pop("minLength", 0))
            high = max(low, min(int(node.pop("maxLength", max_string)), max_string))
            node["pattern"] = bounded_string(low, high)["pattern"]
        if "array" in types:
            low = int(node.get("minItems", 0))
            node["maxItems"] = max(low, min(int(node.get("maxItems", max_items)), max_items))
    return result


def token_budget(schema: dict[str, Any]) -> Optional[int]:
    """Worst-case tokens to emit an instance of ``schema`` (one character a token).

    ``None`` when the size is unbounded (a caller pattern without a quantifier bound).
    """
    import re

    def size(node: Any, depth: int = 0) -> Optional[int]:
        if not isinstance(node, dict) or depth > MAX_SCHEMA_DEPTH + 2:
            return 8
        if "$ref" in node:
            return None
        if "enum" in node:
            return max(len(json.dumps(v)) for v in node["enum"]) + 2
        if "const" in node:
            return len(json.dumps(node["const"])) + 2
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            sizes = [size(o, depth + 1) for o in options]
            return None if None in sizes else max(sizes)
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "object" in types:
            total = 2
            for name, sub in (node.get("properties") or {}).items():
                part = size(sub, depth + 1)
                if part is None:
                    return None
                total += len(name) + 4 + part
            return total
        if "array" in types:
            item = size(node.get("items") or {}, depth + 1)
            if item is None or "maxItems" not in node:
                return None
            return 2 + int(node["maxItems"]) * (item + 1)
        if "string" in types:
            pattern = node.get("pattern")
            if pattern is None:
                return 40 if "format" in node else None
            if not isinstance(pattern, str) or len(pattern) > MAX_REGEX_CHARS:
                return None
            # Each scan stops at the next opening bracket, so it is linear in the pattern.
            if re.search(r"(?<!\\)[*+]|\{\d+,\}", pattern):
                return None  # an unbounded repetition
            bounds = re.findall(r"\{(?:\d+,)?(\d+)\}", pattern)
            literals = len(re.sub(r"\\.|\[[^\][]*\]|\{[^{}]*\}|[\^$()?|]", "", pattern))
            return sum(int(high) for high in bounds) + literals + 4
        if "integer" in types:
            return 12
        if "number" in types:
            return 24
        return 8

    return size(schema)


def fit_to_budget(build: Callable[[float], dict[str, Any]], budget: int) -> tuple[dict[str, Any], float]:
    """The largest schema (by text-bound scale) whose worst-case output fits ``budget``.

    ``build(scale)`` makes the schema; scales halve from 1.0 until it fits (or the
    bounds reach their floors, in which case the smallest schema is returned).
    """
    scale = 1.0
    while True:
        schema = build(scale)
        size = token_budget(schema)
        if size is not None and size <= budget or scale < 0.05:
            return schema, scale
        scale /= 2


def job_posting_response_format(max_tokens: int) -> dict[str, Any]:
    """An OpenAI ``response_format`` for the whole ``job_posting`` record.

    Bounded to finish within ``max_tokens`` even for a model that fills every string to
    its limit; what it yields validates against :func:`record.job_posting_json_schema`.
    """
    schema, _ = fit_to_budget(lambda scale: job_posting_gap_schema(list(FIELDS), scale=scale), max_tokens)
    return {"type": "json_schema", "json_schema": {"name": "job_posting", "schema": schema, "strict": True}}
