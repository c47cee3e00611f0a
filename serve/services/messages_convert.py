"""Between the Anthropic Messages API and chat: content blocks to messages, an answer to a message.

A Messages request becomes one chat request (routing, wakes, fallback and checks as any
chat request); its answer becomes content blocks: ``thinking``, ``text``, ``tool_use``.
Blocks are checked here one by one, so an unknown or unreadable block is a 400 naming
``messages[i].content[j]``.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from serve.kernel.chat_stream import ChatTurn
from serve.kernel.errors import BadRequest
from serve.kernel.messages_protocol import MAX_BLOCKS, CountTokensRequest, MessagesRequest
from serve.kernel.protocol import new_id

#: Blocks read past: earlier thinking is not shown to the model again (as chat templates drop it).
SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _bad(where: str, message: str, code: str = "invalid_content") -> BadRequest:
    return BadRequest(f"{where}: {message}", param=where, code=code)


def _text_blocks(content: Union[str, list[Any], None], where: str) -> str:
    """The text of a string or of text blocks (a system prompt, a tool result)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _bad(where, "must be a string or a list of text blocks")
    texts = []
    for index, block in enumerate(content[:MAX_BLOCKS + 1]):
        if index == MAX_BLOCKS:
            raise _bad(where, f"at most {MAX_BLOCKS} blocks", code="limit_exceeded")
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            kind = block.get("type") if isinstance(block, dict) else None
            raise _bad(f"{where}[{index}]", f"{str(kind)[:40]!r} blocks are not offered here; text blocks are",
                       code="unsupported_content")
        texts.append(block["text"])
    return "\n".join(texts)


def _message(role: str, content: Any, where: str) -> list[dict[str, Any]]:
    """The chat messages of one Anthropic message: tool results first (they answer the
    previous turn's calls), then its text and tool calls."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if len(content) > MAX_BLOCKS:
        raise _bad(f"{where}.content", f"at most {MAX_BLOCKS} blocks", code="limit_exceeded")
    tool_messages, texts, calls = [], [], []
    for index, block in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(at, "a tool_use block needs its id and name")
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})}})
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(at, "a tool_result block needs its tool_use_id")
            text = _text_blocks(block.get("content"), f"{at}.content")
            tool_messages.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                                  "content": f"Error: {text}" if block.get("is_error") else text})
        elif kind in SKIPPED_BLOCKS and role == "assistant":
            continue
        else:
            raise _bad(f"{at}.type", f"{str(kind)[:40]!r} blocks are not offered in {role} messages "
                       "(the graph's models read text, tool use and tool results)", code="unsupported_content")
    messages = tool_messages
    if texts or calls:
        message: dict[str, Any] = {"role": role, "content": "\n".join(texts) if texts else None}
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
    return messages


def to_messages(request: Union[MessagesRequest, CountTokensRequest]) -> list[dict[str, Any]]:
    """The chat messages of a Messages request, its system prompt first."""
    messages = []
    system = _text_blocks(request.system, "system")
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.messages):
        messages += _message(message.role, message.content, f"messages[{index}]")
    return messages


def chat_tools(request: Union[MessagesRequest, CountTokensRequest]) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` (and ``parallel_tool_calls``) in chat's terms."""
    if not request.tools:
        return {}
    fields: dict[str, Any] = {"tools": [{"type": "function", "function": {
        "name": tool.name, "parameters": tool.input_schema, **({"description": tool.description} if tool.description else {}),
    }} for tool in request.tools]}
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise _bad("tool_choice.name", "a tool choice of type 'tool' names the tool", code="invalid_request")
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False
    return fields


def chat_body(request: MessagesRequest) -> dict[str, Any]:
    """The chat request a Messages request is answered by."""
    if (problem := request.stop_bounds()) is not None:
        raise BadRequest(problem, param="stop_sequences", code="limit_exceeded")
    body: dict[str, Any] = {
        "model": request.model, "messages": to_messages(request), "max_tokens": request.max_tokens,
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "stop": request.stop_sequences or None, "user": (request.metadata or {}).get("user_id"), **chat_tools(request),
    }
    thinking = request.thinking
    if thinking is not None and thinking.type == "enabled":
        body["thinking_token_budget"] = thinking.budget_tokens
    elif thinking is not None and thinking.type == "disabled":
        body["reasoning_effort"] = "none"
    if request.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return {key: value for key, value in body.items() if value is not None}


def usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {"input_tokens": int(usage.get("prompt_tokens") or 0), "output_tokens": int(usage.get("completion_tokens") or 0)}


def stop_reason(turn: ChatTurn) -> Optional[str]:
    if turn.stop_sequence:
        return "stop_sequence"
    if turn.tool_calls and turn.finish_reason in ("stop", "tool_calls"):
        return "tool_use"
    return STOP_REASONS.get(turn.finish_reason or "stop", "end_turn")


def tool_input(arguments: str) -> Any:
    """A tool call's arguments as the object ``tool_use.input`` holds ({} when they are not JSON)."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def content_blocks(turn: ChatTurn) -> list[dict[str, Any]]:
    """The content of a finished chat turn: thinking, text, then tool use."""
    blocks: list[dict[str, Any]] = []
    if turn.reasoning:
        blocks.append({"type": "thinking", "thinking": turn.reasoning, "signature": ""})
    if turn.text or not turn.tool_calls:
        blocks.append({"type": "text", "text": turn.text})
    for call in turn.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id or new_id("toolu_"), "name": call.name,
                       "input": tool_input(call.arguments)})
    return blocks


def message_object(message_id: str, model: str, turn: Optional[ChatTurn]) -> dict[str, Any]:
    """The message object: empty and unfinished (a stream's start), or a finished turn."""
    return {
        "id": message_id, "type": "message", "role": "assistant", "model": (turn.model if turn and turn.model else model),
        "content": content_blocks(turn) if turn is not None else [],
        "stop_reason": stop_reason(turn) if turn is not None else None,
        "stop_sequence": turn.stop_sequence if turn is not None else None,
        "usage": usage(turn.usage if turn is not None else {}),
    }
