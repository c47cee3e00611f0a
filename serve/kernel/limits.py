"""Per-request limits for generation requests, checked before anything reaches an engine.

Each limit is explicit, documented in the README, and answered with a 400 in the OpenAI
envelope naming the parameter. vLLM validates much on its own (sampling ranges, the
context length, four stop sequences); these are the knobs it leaves open that let one
request occupy an engine for a long time or make the grammar compiler work unboundedly.
"""

from __future__ import annotations

import json
from typing import Any

from serve.kernel.config import LLMSpec
from serve.kernel.errors import BadRequest

#: Longest regex accepted for regex-constrained decoding, and longest ``pattern`` in a
#: caller's extraction schema.
MAX_REGEX_CHARS = 2000
#: Largest JSON schema (serialized) accepted for schema-constrained decoding, in chat
#: as in ``/v1/extract``.
MAX_SCHEMA_BYTES = 64 * 1024
#: Largest logprob count, for generated and for prompt tokens (vLLM's default cap).
MAX_LOGPROBS = 20
#: Stop sequences a request may carry, and the longest one: each is searched for in every
#: detokenized step of every sequence. vLLM's request model already refuses a fifth
#: sequence (OpenAI's bound); the count is checked here too in case a release lifts it.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
#: Token biases a request may carry (OpenAI's own bound): each is applied at every step.
MAX_LOGIT_BIAS = 300
#: Tools a chat request may carry (OpenAI's bound); each one's parameters schema is
#: bounded as a response_format schema is (its grammar is compiled for tool_choice).
MAX_TOOLS = 128
#: JSON nesting of a response_format schema or a tool's parameters.
MAX_CHAT_SCHEMA_DEPTH = 64


def _too_big(field: str, value: Any, limit: int) -> BadRequest:
    return BadRequest(f"{field}={value} exceeds the limit of {limit}", param=field, code="limit_exceeded")


def _schema_of(response_format: Any) -> Any:
    if response_format is None:
        return None
    json_schema = getattr(response_format, "json_schema", None)
    if json_schema is None and isinstance(response_format, dict):
        json_schema = response_format.get("json_schema")
    if json_schema is None:
        return None
    if isinstance(json_schema, dict):
        return json_schema.get("schema", json_schema.get("json_schema"))
    return getattr(json_schema, "json_schema", None) or getattr(json_schema, "schema", None)


def apply_generation_limits(body: Any, spec: LLMSpec) -> None:
    """Check ``body`` (a chat or completion request) against ``spec``'s limits.

    Defaults ``max_tokens`` to the model's limit when the request sets none, so no
    request generates until the context is full by accident.

    Raises:
        BadRequest: a limit is exceeded; the error names the parameter.
    """
    limit = spec.max_tokens_limit
    for field in ("max_completion_tokens", "max_tokens"):
        value = getattr(body, field, None)
        if value is not None and value > limit:
            raise BadRequest(
                f"{field}={value} exceeds this model's limit of {limit}",
                param=field, code="max_tokens_exceeded",
            )
    if getattr(body, "max_tokens", None) is None and getattr(body, "max_completion_tokens", None) is None:
        body.max_tokens = limit

    n = getattr(body, "n", None) or 1
    if n > spec.max_n:
        raise _too_big("n", n, spec.max_n)
    for field in ("top_logprobs", "prompt_logprobs"):
        value = getattr(body, field, None)
        if isinstance(value, int) and value > MAX_LOGPROBS:
            raise _too_big(field, value, MAX_LOGPROBS)
    logprobs = getattr(body, "logprobs", None)  # completions: an int
    if isinstance(logprobs, int) and not isinstance(logprobs, bool) and logprobs > MAX_LOGPROBS:
        raise _too_big("logprobs", logprobs, MAX_LOGPROBS)

    structured = getattr(body, "structured_outputs", None)
    if structured is not None:
        grammar = getattr(structured, "grammar", None)
        if grammar:
            raise BadRequest(
                "grammar-constrained decoding is not offered (its compile cost is unbounded); "
                "use response_format with a JSON schema",
                param="structured_outputs.grammar", code="unsupported_parameter",
            )
        regex = getattr(structured, "regex", None)
        if regex and len(regex) > MAX_REGEX_CHARS:
            raise _too_big("structured_outputs.regex length", len(regex), MAX_REGEX_CHARS)
        schema = getattr(structured, "json", None)
        if schema is not None and len(json.dumps(schema) if not isinstance(schema, str) else schema) > MAX_SCHEMA_BYTES:
            raise _too_big("structured_outputs.json size", "too large", MAX_SCHEMA_BYTES)

    _check_schema_bounds("response_format.json_schema", _schema_of(getattr(body, "response_format", None)))
    _check_stops(body)
    logit_bias = getattr(body, "logit_bias", None)
    if logit_bias and len(logit_bias) > MAX_LOGIT_BIAS:
        raise _too_big("logit_bias", f"{len(logit_bias)} entries", MAX_LOGIT_BIAS)
    tools = getattr(body, "tools", None) or []
    if len(tools) > MAX_TOOLS:
        raise _too_big("tools", f"{len(tools)} tools", MAX_TOOLS)
    for index, tool in enumerate(tools):
        function = getattr(tool, "function", None)
        _check_schema_bounds(f"tools[{index}].function.parameters", getattr(function, "parameters", None))


def _check_schema_bounds(field: str, schema: Any) -> None:
    """A schema the grammar compiler will see: bounded in size and nesting."""
    if schema is None:
        return
    if nests_deeper_than(schema, MAX_CHAT_SCHEMA_DEPTH):
        raise _too_big(field, "a schema nested deeper than the limit", MAX_CHAT_SCHEMA_DEPTH)
    size = len(json.dumps(schema, default=str))
    if size > MAX_SCHEMA_BYTES:
        raise _too_big(field, f"{size} bytes", MAX_SCHEMA_BYTES)


def _check_stops(body: Any) -> None:
    stop = getattr(body, "stop", None)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise _too_big("stop", f"{len(stops)} sequences", MAX_STOP_SEQUENCES)
    longest = max((len(s) for s in stops if isinstance(s, str)), default=0)
    if longest > MAX_STOP_CHARS:
        raise _too_big("stop", f"a sequence of {longest} characters", MAX_STOP_CHARS)
    stop_ids = getattr(body, "stop_token_ids", None) or []
    if len(stop_ids) > MAX_STOP_TOKEN_IDS:
        raise _too_big("stop_token_ids", f"{len(stop_ids)} ids", MAX_STOP_TOKEN_IDS)


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has objects or arrays nested more than ``limit`` deep (iterative:
    the nesting a request can carry never reaches the interpreter's stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False
