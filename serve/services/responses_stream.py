"""A chat stream as the Responses API's typed events.

``response.created`` and ``response.in_progress`` first; then, per output item, its
``output_item.added``, the deltas (``reasoning_text``, ``output_text`` with its content
part, ``function_call_arguments``), its ``.done`` events and ``output_item.done``; then
``response.completed`` (``response.incomplete`` when the token limit cut it). A stream
that breaks after it started ends with ``response.failed``. Every event carries its
``sequence_number``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from serve.kernel.chat_stream import ChatTurn, StreamFailed, chat_chunks
from serve.services.responses_convert import OutputIds, call_item, message_item, output_items, reasoning_item


logger = logging.getLogger("ray.serve")


def sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


class ResponseEvents:
    """Turns one chat stream into one response's events.

    Args:
        skeleton: Builds the response object for a status, output and finished turn
            (:func:`serve.services.responses_convert.response_object` with the request bound).
        ids: The response's ids.
        finished: Called with the final response before its last event (it is stored
            then, so a client that chains at once finds it).
    """

    def __init__(self, skeleton: Callable[..., dict[str, Any]], ids: OutputIds,
                 finished: Callable[[dict[str, Any], ChatTurn], Awaitable[None]]) -> None:
        self._skeleton = skeleton
        self._ids = ids
        self._finished = finished
        self._sequence = 0
        self._turn = ChatTurn()
        self._open: Optional[str] = None  # "reasoning", "message" or "call:<index>"
        self._output: list[dict[str, Any]] = []

    def _event(self, kind: str, **fields: Any) -> str:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse(event)

    # ------------------------------------------------------------- items
    def _item_id(self, which: str) -> str:
        if which == "reasoning":
            return self._ids.reasoning
        if which == "message":
            return self._ids.message
        index = int(which.split(":")[1])
        return self._ids.call(index)

    def _start(self, which: str) -> list[str]:
        events = self._close()
        self._open = which
        index = len(self._output)
        item_id = self._item_id(which)
        if which == "reasoning":
            item = reasoning_item(item_id, "", "in_progress")
            item["content"] = []
        elif which == "message":
            item = message_item(item_id, "", "in_progress")
        else:
            call = self._turn.tool_call(int(which.split(":")[1]))
            item = call_item(item_id, call.id, call.name, "", "in_progress")
        self._output.append(item)
        events.append(self._event("response.output_item.added", output_index=index, item=item))
        if which == "message":
            events.append(self._event("response.content_part.added", item_id=item_id, output_index=index,
                                      content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        return events

    def _close(self) -> list[str]:
        if self._open is None:
            return []
        which, self._open = self._open, None
        index = len(self._output) - 1
        item_id = self._item_id(which)
        events = []
        if which == "reasoning":
            item = reasoning_item(item_id, self._turn.reasoning)
            events.append(self._event("response.reasoning_text.done", item_id=item_id, output_index=index,
                                      content_index=0, text=self._turn.reasoning))
        elif which == "message":
            item = message_item(item_id, self._turn.text)
            part = item["content"][0]
            events.append(self._event("response.output_text.done", item_id=item_id, output_index=index,
                                      content_index=0, text=self._turn.text, logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=item_id, output_index=index,
                                      content_index=0, part=part))
        else:
            call = self._turn.tool_call(int(which.split(":")[1]))
            item = call_item(item_id, call.id, call.name, call.arguments)
            events.append(self._event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                                      name=call.name, arguments=call.arguments))
        self._output[index] = item
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    # ------------------------------------------------------------- deltas
    def _chunk(self, chunk: dict[str, Any]) -> list[str]:
        events: list[str] = []
        for delta in self._turn.read(chunk):
            which = {"reasoning": "reasoning", "text": "message"}.get(delta.kind, f"call:{delta.index}")
            if self._open != which:
                events += self._start(which)
            if not delta.text:
                continue
            index = len(self._output) - 1
            if delta.kind == "reasoning":
                events.append(self._event("response.reasoning_text.delta", item_id=self._ids.reasoning,
                                          output_index=index, content_index=0, delta=delta.text))
            elif delta.kind == "text":
                events.append(self._event("response.output_text.delta", item_id=self._ids.message, output_index=index,
                                          content_index=0, delta=delta.text, logprobs=[]))
            else:
                events.append(self._event("response.function_call_arguments.delta", item_id=self._ids.call(delta.index),
                                          output_index=index, delta=delta.text))
        return events

    # ------------------------------------------------------------- the whole stream
    async def events(self, stream: AsyncIterator[Any]) -> AsyncIterator[str]:
        """The response's events for the chat ``stream``."""
        yield self._event("response.created", response=self._skeleton(status="in_progress"))
        yield self._event("response.in_progress", response=self._skeleton(status="in_progress"))
        try:
            async for chunk in chat_chunks(stream):
                for event in self._chunk(chunk):
                    yield event
        except StreamFailed as exc:
            for event in self._close():
                yield event
            failed = self._skeleton(status="failed", output=self._output, turn=self._turn,
                                    error={"code": "server_error", "message": str(exc)})
            yield self._event("response.failed", response=failed)
            return
        for event in self._close():
            yield event
        final = self._skeleton(output=output_items(self._turn, self._ids), turn=self._turn)
        try:
            await self._finished(final, self._turn)
        except Exception as exc:  # noqa: BLE001 - the job store did not take it: say so, never a silent loss
            logger.warning("response %s answered but not stored: %r", self._ids.response, exc)
            failed = self._skeleton(status="failed", output=final["output"], turn=self._turn, error={
                "code": "store_unavailable", "message": "the answer could not be stored (store: true); try again"})
            yield self._event("response.failed", response=failed)
            return
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield self._event(kind, response=final)
