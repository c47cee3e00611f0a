"""The OpenAI Responses API over the graph: one chat request per response, stored turns.

A response is answered by :class:`ChatService` as a chat request would be (routing and
``auto``, wakes, fallback, structured-output checks); this service turns its input
items into chat messages, the answer into output items or typed stream events
(``responses_convert``, ``responses_stream``), and keeps stored responses in the job
store (the Batches deployment): a ``previous_response_id`` chain is read from there,
so a conversation goes on across requests and across a restart of the graph.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Optional

from pydantic import ValidationError
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from serve.kernel.chat_params import check_metadata
from serve.kernel.chat_stream import ChatTurn
from serve.kernel.errors import BadRequest, NotFound, validation_problem, within
from serve.kernel.responses_protocol import MAX_CHAIN, MAX_CONVERSATION_BYTES, ResponsesRequest
from serve.services.chat import Answer, ChatService, RouteAsks
from serve.services.responses_convert import OutputIds, chat_body, normalize_items, output_items, response_object, to_messages
from serve.services.responses_stream import ResponseEvents

#: Most input items ``GET /v1/responses/{id}/input_items`` returns per page.
MAX_PAGE = 100


def _not_found(response_id: str, param: str = "response_id") -> NotFound:
    return NotFound(f"no response with id {response_id[:128]!r}", param=param, code="response_not_found")


class ResponsesService:
    """``/v1/responses``: create (streamed or not), retrieve, delete, input items.

    Args:
        chat: The chat service every response is answered by.
        store: The Batches deployment's handle, which keeps stored responses (None when
            the profile has no job store: responses are then answered, not stored).
        timeout_s: How long a store call may take.
    """

    def __init__(self, chat: ChatService, store: Any, *, timeout_s: float) -> None:
        self._chat = chat
        self._store = store
        self._timeout_s = timeout_s

    async def _stored(self, response_id: str, owner: str, param: str = "response_id") -> dict[str, Any]:
        if self._store is None:
            raise _not_found(response_id, param)
        record = await within(self._store.get_response.remote(response_id, owner), self._timeout_s, "the job store")
        if record is None:
            raise _not_found(response_id, param)
        return record

    async def create(self, request: ResponsesRequest, asks: RouteAsks, request_info: Any, owner: str) -> Answer:
        """Answer a Responses request; its response object or its event stream."""
        check_metadata(request.metadata)
        items = normalize_items(request.input)
        history: list[dict[str, Any]] = []
        depth = 0
        if request.previous_response_id is not None:
            if self._store is None:
                raise BadRequest("previous_response_id needs stored responses, and this graph has no job store "
                                 "(batch.enabled is off)", param="previous_response_id", code="store_disabled")
            previous = await self._stored(request.previous_response_id, owner, "previous_response_id")
            history, depth = previous["conversation"], previous["depth"] + 1
            if depth >= MAX_CHAIN:
                raise BadRequest(f"a conversation may chain {MAX_CHAIN} responses; start a new one with a summary",
                                 param="previous_response_id", code="chain_too_long")
        conversation = history + items
        if len(json.dumps(conversation)) > MAX_CONVERSATION_BYTES:
            raise BadRequest(f"the conversation exceeds {MAX_CONVERSATION_BYTES} bytes; start a new one with a summary",
                             param="input", code="conversation_too_long")
        try:
            body = ChatCompletionRequest.model_validate(chat_body(request, to_messages(request.instructions, conversation)))
        except ValidationError as exc:
            message, param = validation_problem(exc.errors())
            raise BadRequest(message, param=param) from None
        store = request.store and self._store is not None
        if request.store and not store:
            request = request.model_copy(update={"store": False})
        ids, created_at = OutputIds(), int(time.time())

        def skeleton(**fields: Any) -> dict[str, Any]:
            return response_object(request, ids, created_at, **fields)

        async def finished(response: dict[str, Any], turn: ChatTurn) -> None:
            if store:
                await within(self._store.put_response.remote({
                    "id": ids.response, "owner": owner, "created_at": created_at, "depth": depth,
                    "response": response, "input_items": items, "conversation": conversation + response["output"],
                }), self._timeout_s, "the job store")

        answer = await self._chat.chat(body, asks, request_info)
        if answer.dispatched.stream is not None:
            events = ResponseEvents(skeleton, ids, finished).events(answer.dispatched.stream)
            return Answer(dataclasses.replace(answer.dispatched, stream=events), headers=answer.headers)
        turn = ChatTurn.from_reply(answer.reply)
        response = skeleton(output=output_items(turn, ids), turn=turn)
        await finished(response, turn)
        return Answer(answer.dispatched, response, answer.headers)

    async def get(self, response_id: str, owner: str) -> dict[str, Any]:
        return (await self._stored(response_id, owner))["response"]

    async def delete(self, response_id: str, owner: str) -> dict[str, Any]:
        if self._store is None or not await within(self._store.delete_response.remote(response_id, owner),
                                                   self._timeout_s, "the job store"):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, response_id: str, owner: str, *, after: Optional[str] = None, limit: int = 20,
                          order: str = "desc") -> dict[str, Any]:
        """A stored response's input items, a page at a time (newest first by default)."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must lie in [1, {MAX_PAGE}]", param="limit")
        if order not in ("asc", "desc"):
            raise BadRequest("order must be 'asc' or 'desc'", param="order")
        items = list((await self._stored(response_id, owner))["input_items"])
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
