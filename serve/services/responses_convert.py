"""Between the Responses API and chat: input items to messages, a chat answer to a response.

A Responses request becomes one chat request that goes through :class:`ChatService`
like any other (routing, wakes, fallback, conformance); its answer becomes the output
items of a response. Items are checked here, one by one, so that an unknown type or a
content part the graph cannot read is a 400 naming ``input[i]``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from serve.kernel.chat_params import TEXT_PARTS
from serve.kernel.chat_stream import ChatTurn
from serve.kernel.errors import BadRequest
from serve.kernel.protocol import new_id
from serve.kernel.responses_protocol import MAX_INPUT_ITEMS, ResponsesRequest

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})
ID_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


def _bad(where: str, message: str, code: str = "invalid_item") -> BadRequest:
    return BadRequest(f"{where}: {message}", param=where, code=code)


def _text_of(content: Any, where: str) -> str:
    """The text of a message's content: a string, or text parts (anything else is a 400)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of text parts")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in TEXT_PARTS:
            raise _bad(f"{where}.content[{index}].type", f"{str(kind)[:40]!r} is not offered: the graph's models "
                       "read text only", code="unsupported_content")
        if not isinstance(part.get("text"), str):
            raise _bad(f"{where}.content[{index}].text", "must be a string")
        texts.append(part["text"])
    return "".join(texts)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value and key != "arguments":
        raise _bad(f"{where}.{key}", "must be a non-empty string")
    return value


def _item_id(item: dict[str, Any], kind: str) -> str:
    """The item's own id when it has a short one (a client resending output items), else a new one."""
    given = item.get("id")
    return given if isinstance(given, str) and 0 < len(given) <= 128 else new_id(ID_PREFIX[kind])


def normalize_items(raw: Any) -> list[dict[str, Any]]:
    """The request's input as checked items, each with an id (``input_items`` lists them)."""
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": raw}]
    if len(raw) > MAX_INPUT_ITEMS:
        raise BadRequest(f"input holds {len(raw)} items; at most {MAX_INPUT_ITEMS}", param="input", code="limit_exceeded")
    items = []
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object")
        kind = item.get("type", "message" if "role" in item else None)
        if not isinstance(kind, str) or kind not in ITEM_TYPES:
            raise _bad(f"{where}.type", f"{str(kind)[:40]!r} is not one of {sorted(ITEM_TYPES)}", code="unsupported_item")
        checked: dict[str, Any] = {"type": kind, "id": _item_id(item, kind)}
        if kind == "message":
            if not isinstance(item.get("role"), str) or item["role"] not in MESSAGE_ROLES:
                raise _bad(f"{where}.role", f"{str(item.get('role'))[:40]!r} is not one of {sorted(MESSAGE_ROLES)}")
            text = _text_of(item.get("content"), where)
            part = "output_text" if item["role"] == "assistant" else "input_text"
            checked.update(role=item["role"], content=[{"type": part, "text": text}], status="completed")
        elif kind == "function_call":
            checked.update(call_id=_string(item, "call_id", where), name=_string(item, "name", where),
                           arguments=_string(item, "arguments", where), status="completed")
        elif kind == "function_call_output":
            output = item.get("output")
            checked.update(call_id=_string(item, "call_id", where),
                           output=output if isinstance(output, str) else _text_of(output, f"{where}.output"),
                           status="completed")
        else:  # reasoning: the model's earlier thinking is read past, as chat templates drop it
            checked.update(summary=[], content=[c for c in item.get("content") or [] if isinstance(c, dict)][:1])
        items.append(checked)
    return items


def to_messages(instructions: Optional[str], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for ``items`` (a conversation), ``instructions`` as the system message."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": item["content"][0]["text"]})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def _chat_tools(tools: Optional[list[dict[str, Any]]]) -> Optional[list[dict[str, Any]]]:
    if not tools:
        return None
    chat_tools = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise _bad(f"tools[{index}].type", f"{str(tool.get('type'))[:40]!r} tools are not offered; function tools are",
                       code="unsupported_tool")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools[{index}].name", "must be a non-empty string")
        function = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            function["description"] = tool["description"]
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _chat_tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", "must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}")


def _chat_format(request: ResponsesRequest) -> Optional[dict[str, Any]]:
    form = request.text.format if request.text else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if form.schema_ is None:
        raise _bad("text.format.schema", "a json_schema format needs its schema")
    return {"type": "json_schema", "json_schema": {"name": form.name or "response", "schema": form.schema_,
                                                   "strict": bool(form.strict)}}


def chat_body(request: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request a Responses request is answered by."""
    body = {
        "model": request.model, "messages": messages, "max_tokens": request.max_output_tokens,
        "temperature": request.temperature, "top_p": request.top_p, "tools": _chat_tools(request.tools),
        "tool_choice": _chat_tool_choice(request.tool_choice), "parallel_tool_calls": request.parallel_tool_calls,
        "response_format": _chat_format(request), "user": request.user,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
    }
    if body["tools"] is None:
        body.pop("tool_choice")
    if request.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return {key: value for key, value in body.items() if value is not None}


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    reasoning = ((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + completion}


class OutputIds:
    """The ids of one response's output items, fixed before the first event so a stream
    and the stored response name the same items."""

    def __init__(self) -> None:
        self.response = new_id("resp_")
        self.reasoning = new_id("rs_")
        self.message = new_id("msg_")
        self._calls: list[str] = []

    def call(self, index: int) -> str:
        while len(self._calls) <= index:
            self._calls.append(new_id("fc_"))
        return self._calls[index]


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}],
            "status": status}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id or new_id("call_"), "name": name,
            "arguments": arguments, "status": status}


def output_items(turn: ChatTurn, ids: OutputIds) -> list[dict[str, Any]]:
    """The output items of a finished chat turn: thinking, text, then tool calls."""
    items = []
    if turn.reasoning:
        items.append(reasoning_item(ids.reasoning, turn.reasoning))
    if turn.text or not turn.tool_calls:
        items.append(message_item(ids.message, turn.text))
    for index, call in enumerate(turn.tool_calls):
        items.append(call_item(ids.call(index), call.id, call.name, call.arguments))
    return items


def response_object(request: ResponsesRequest, ids: OutputIds, created_at: int, *, status: str = "completed",
                    output: Optional[list[dict[str, Any]]] = None, turn: Optional[ChatTurn] = None,
                    error: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The response object: what was asked, and (once finished) what came back."""
    incomplete = turn is not None and turn.finish_reason == "length"
    if incomplete and status == "completed":
        status = "incomplete"
    form = request.text.format.model_dump(by_alias=True, exclude_none=True) if request.text and request.text.format else {"type": "text"}
    return {
        "id": ids.response, "object": "response", "created_at": created_at, "status": status,
        "model": (turn.model if turn and turn.model else request.model), "output": output or [],
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature, "top_p": request.top_p,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "tool_choice": request.tool_choice or "auto", "tools": [
            {"type": "function", "name": t["name"], "description": t.get("description"),
             "parameters": t.get("parameters") or {"type": "object", "properties": {}}, "strict": bool(t.get("strict"))}
            for t in request.tools or []],
        "text": {"format": form}, "reasoning": {"effort": request.reasoning.effort if request.reasoning else None,
                                                "summary": None},
        "previous_response_id": request.previous_response_id, "store": request.store,
        "metadata": request.metadata or {}, "user": request.user, "truncation": request.truncation or "disabled",
        "usage": _usage(turn.usage) if turn is not None else None, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
    }

