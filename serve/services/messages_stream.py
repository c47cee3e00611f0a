"""A chat stream as the Anthropic Messages API's events.

``message_start``; then per content block ``content_block_start``, its deltas
(``thinking_delta``, ``text_delta``, ``input_json_delta``) and ``content_block_stop``;
then ``message_delta`` (stop reason, usage) and ``message_stop``. A stream that breaks
after it started ends with Anthropic's ``error`` event.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Optional

from serve.kernel.chat_stream import ChatTurn, Delta, StreamFailed, chat_chunks
from serve.kernel.protocol import new_id
from serve.services.messages_convert import message_object, stop_reason, usage


def sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n"


class MessageEvents:
    """Turns one chat stream into one message's events."""

    def __init__(self, message_id: str, model: str) -> None:
        self._message_id = message_id
        self._model = model
        self._turn = ChatTurn()
        self._open: Optional[str] = None  # "reasoning", "text" or "tool:<index>"
        self._index = -1

    def _start(self, which: str, block: dict[str, Any]) -> list[str]:
        events = self._stop()
        self._open = which
        self._index += 1
        return events + [sse("content_block_start", {"index": self._index, "content_block": block})]

    def _stop(self) -> list[str]:
        if self._open is None:
            return []
        self._open = None
        return [sse("content_block_stop", {"index": self._index})]

    def _chunk(self, chunk: dict[str, Any]) -> list[str]:
        events: list[str] = []
        for delta in self._turn.read(chunk):
            which = delta.kind if delta.kind != "tool" else f"tool:{delta.index}"
            if self._open != which:
                events += self._start(which, self._block(delta))
            if not delta.text:
                continue
            kind, field = {"reasoning": ("thinking_delta", "thinking"), "text": ("text_delta", "text")}.get(
                delta.kind, ("input_json_delta", "partial_json"))
            events.append(sse("content_block_delta", {"index": self._index, "delta": {"type": kind, field: delta.text}}))
        return events

    def _block(self, delta: Delta) -> dict[str, Any]:
        """The empty block a delta of a new kind opens."""
        if delta.kind == "reasoning":
            return {"type": "thinking", "thinking": "", "signature": ""}
        if delta.kind == "text":
            return {"type": "text", "text": ""}
        call = self._turn.tool_call(delta.index)
        call.id = call.id or new_id("toolu_")
        return {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}

    async def events(self, stream: AsyncIterator[Any]) -> AsyncIterator[str]:
        """The message's events for the chat ``stream``."""
        yield sse("message_start", {"message": message_object(self._message_id, self._model, None)})
        try:
            async for chunk in chat_chunks(stream):
                for event in self._chunk(chunk):
                    yield event
        except StreamFailed as exc:
            for event in self._stop():
                yield event
            yield sse("error", {"error": {"type": "api_error", "message": str(exc)}})
            return
        for event in self._stop():
            yield event
        yield sse("message_delta", {"delta": {"stop_reason": stop_reason(self._turn),
                                              "stop_sequence": self._turn.stop_sequence},
                                    "usage": usage(self._turn.usage)})
        yield sse("message_stop", {})
