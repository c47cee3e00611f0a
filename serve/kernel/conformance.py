"""OpenAI conformance that clients rely on, checked on every non-streaming chat reply.

Clients such as ``openai``'s ``chat.completions.parse()`` and ``instructor`` trust two
promises that an engine can break with a small or random-weight model, or when thinking
eats the token budget:

- a ``json_schema`` / ``json_object`` reply is JSON from its first character, and its
  strings carry no raw control characters (``json.loads`` and pydantic refuse them);
- a named ``tool_choice`` (or ``required``) yields tool calls whose arguments parse as a
  JSON object, never plain content;
- ``logprobs.content`` describes the message's content tokens (no end-of-turn token).

:func:`check_chat_reply` repairs what can be repaired without changing meaning (raw
control characters are re-escaped) and turns the rest into a clear error: 422 when the
request's own ``max_tokens`` cut the structure short, 502 when the model produced
something else. A reply truncated by ``max_tokens`` in JSON mode keeps OpenAI's own
behaviour (a JSON prefix with ``finish_reason: "length"``, which clients report).

:func:`structured_thinking_budget` keeps a reasoning model's thinking from using the whole
budget of a structured request, so the structure has room to be written.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from serve.kernel.errors import BadModelOutput, Unprocessable


def forced_tool(body: dict[str, Any]) -> Optional[str]:
    """The tool a request forces: its name, ``"required"`` for any, or None."""
    choice = body.get("tool_choice")
    if choice == "required":
        return "required"
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name") or "required")
    return None


def wants_json(body: dict[str, Any]) -> bool:
    """Whether the request asks for a JSON reply (``json_schema`` or ``json_object``)."""
    response_format = body.get("response_format") or {}
    return isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object")


def forces_structure(body: dict[str, Any]) -> bool:
    """Whether the request forces a tool call or a JSON reply."""
    return bool(forced_tool(body) or wants_json(body))


def structured_thinking_budget(budget: Optional[int], max_tokens: Optional[int]) -> Optional[int]:
    """At most half of ``max_tokens`` for thinking when the reply must be a structure."""
    if budget is None or not max_tokens:
        return budget
    return max(1, min(budget, max_tokens // 2))


_NOT_JSON = object()


def _parse_json(text: str) -> tuple[Any, Optional[str]]:
    """``(value, repaired_text)`` for ``text``; ``repaired_text`` is None when ``text`` is
    strict JSON, else ``text`` re-serialized with its raw control characters escaped.
    ``value`` is ``_NOT_JSON`` when ``text`` is not JSON at all."""
    try:
        return json.loads(text), None  # strict: raw control characters in strings are refused
    except ValueError:
        pass
    try:
        value = json.loads(text, strict=False)
    except ValueError:
        return _NOT_JSON, None
    return value, json.dumps(value, ensure_ascii=False)


def _check_json_content(choice: dict[str, Any]) -> None:
    message = choice.get("message") or {}
    content = message.get("content")
    if choice.get("finish_reason") == "length" and (not content or content.lstrip()[:1] in ("{", "[")):
        return  # OpenAI's behaviour: a JSON prefix, and the client is told it was cut short
    if not isinstance(content, str) or not content:
        raise BadModelOutput("the model returned no JSON content for a JSON response_format")
    value, repaired = _parse_json(content)
    if value is _NOT_JSON:
        raise BadModelOutput("the model's reply is not the JSON the response_format asks for")
    if repaired is not None:
        message["content"] = repaired


def _check_tool_calls(choice: dict[str, Any], forced: str, max_tokens: Optional[int]) -> None:
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    complete = bool(calls)
    for call in calls:
        function = call.get("function") or {}
        if forced != "required" and function.get("name") != forced:
            complete = False
            continue
        arguments, repaired = _parse_json(function.get("arguments") or "")
        if repaired is not None:
            function["arguments"] = repaired
        if not isinstance(arguments, dict):
            complete = False
    if complete:
        return
    what = "a call to any tool" if forced == "required" else f"the forced call to {forced!r}"
    if choice.get("finish_reason") == "length":
        raise Unprocessable(
            f"the model reached max_tokens={max_tokens} before it completed {what}; raise max_tokens",
            param="max_tokens", code="output_truncated",
        )
    raise BadModelOutput(f"the model did not produce {what} with JSON-object arguments")


def needs_check(request: dict[str, Any]) -> bool:
    """Whether :func:`check_chat_reply` has anything to check for ``request``."""
    return forces_structure(request) or bool(request.get("logprobs"))


def _drop_end_token_logprob(choice: dict[str, Any]) -> None:
    """OpenAI's ``logprobs.content`` lists the message's content tokens; vLLM adds the
    end-of-turn token that stopped generation. Drop that entry when it is the only
    difference between the tokens and the content."""
    message = choice.get("message") or {}
    entries = (choice.get("logprobs") or {}).get("content") or []
    content = message.get("content")
    if choice.get("finish_reason") != "stop" or not entries or not isinstance(content, str):
        return
    joined = "".join(str(entry.get("token", "")) for entry in entries)
    last = str(entries[-1].get("token", ""))
    if joined != content and last and joined[: len(joined) - len(last)] == content:
        entries.pop()


def check_chat_reply(request: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """Check (and repair in place) a chat completion against what ``request`` forced.

    Args:
        request: The chat request as sent to the engine (a dict).
        reply: The engine's chat completion (a dict); changed in place when repaired.

    Raises:
        Unprocessable: a forced tool call was cut short by ``max_tokens``.
        BadModelOutput: the model's output is not the structure the request forced.
    """
    forced = forced_tool(request)
    json_reply = wants_json(request)
    if not needs_check(request):
        return reply
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    for choice in reply.get("choices") or []:
        if request.get("logprobs"):
            _drop_end_token_logprob(choice)
        if forced:
            _check_tool_calls(choice, forced, max_tokens)
        elif json_reply:
            _check_json_content(choice)
    return reply
