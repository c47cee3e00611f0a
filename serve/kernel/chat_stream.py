"""Reading a chat completion stream as data, for the APIs that speak another protocol.

The dispatcher hands back a chat stream as OpenAI SSE text (``data: {…}`` events, one or
several per item, then ``data: [DONE]``). The Responses and Messages APIs translate it
into their own events; :func:`chat_chunks` gives them the chunks as dictionaries and
turns an error the engine sent, or a failure of the stream itself, into
:class:`StreamFailed`, whose message is safe to show a client. :class:`ChatTurn`
gathers what a stream said, for the final event and for a stored response.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

logger = logging.getLogger("ray.serve")


class StreamFailed(Exception):
    """The answer's stream broke after it started (its message is safe for a client)."""


async def chat_chunks(stream: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """The chat chunks of an SSE ``stream``, in order, until ``[DONE]``.

    Raises:
        StreamFailed: the engine sent an error event, or the stream raised.
    """
    try:
        async for item in stream:
            text = item.decode() if isinstance(item, bytes) else str(item)
            for line in text.splitlines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                    error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    logger.warning("engine error mid-stream: %s", str(error.get("message"))[:300])
                    raise StreamFailed("the model failed while answering; try again")
                yield chunk
    except StreamFailed:
        raise
    except Exception as exc:  # a replica that died, a broken chunk: never the internal text
        logger.warning("stream failed: %r", exc)
        raise StreamFailed("the model stopped answering mid-stream; try again") from None


@dataclass(frozen=True)
class Delta:
    """One piece of an answer as a stream brings it: thinking, text, or a tool call's
    arguments (``index``: which call; the first delta of a call may carry no text)."""

    kind: str  # "reasoning", "text" or "tool"
    text: str = ""
    index: int = 0


@dataclass
class ToolCallParts:
    """One tool call as a stream builds it."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ChatTurn:
    """What a chat answer said, gathered from its reply or its stream."""

    model: str = ""
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallParts] = field(default_factory=list)
    finish_reason: Optional[str] = None
    stop_sequence: Optional[str] = None
    usage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> "ChatTurn":
        """The turn of a (non-streamed) chat completion object."""
        choice = (reply.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        turn = cls(model=reply.get("model", ""), text=message.get("content") or "",
                   reasoning=message.get("reasoning") or message.get("reasoning_content") or "",
                   finish_reason=choice.get("finish_reason"), usage=reply.get("usage") or {})
        stop = choice.get("stop_reason")
        turn.stop_sequence = stop if isinstance(stop, str) else None
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            turn.tool_calls.append(ToolCallParts(call.get("id") or "", function.get("name") or "",
                                                 function.get("arguments") or ""))
        return turn

    def read(self, chunk: dict[str, Any]) -> list[Delta]:
        """Add a stream's chunk to the turn; the pieces it brought, in order."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        self.model = chunk.get("model") or self.model
        deltas: list[Delta] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                self.reasoning += reasoning
                deltas.append(Delta("reasoning", reasoning))
            if delta.get("content"):
                self.text += delta["content"]
                deltas.append(Delta("text", delta["content"]))
            for call_delta in delta.get("tool_calls") or []:
                index = int(call_delta.get("index") or 0)
                call = self.tool_call(index)
                function = call_delta.get("function") or {}
                call.id = call_delta.get("id") or call.id
                call.name = function.get("name") or call.name
                call.arguments += function.get("arguments") or ""
                deltas.append(Delta("tool", function.get("arguments") or "", index))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                stop = choice.get("stop_reason")
                self.stop_sequence = stop if isinstance(stop, str) else None
        return deltas

    def tool_call(self, index: int) -> ToolCallParts:
        """The tool call at ``index`` of the stream's deltas (created on first sight)."""
        while len(self.tool_calls) <= index:
            self.tool_calls.append(ToolCallParts())
        return self.tool_calls[index]
