"""The Anthropic Messages API over the graph: one chat request per message.

A message is answered by :class:`ChatService` as a chat request would be (routing and
``auto``, wakes, fallback, structured-output checks); this service turns content blocks
into chat messages and the answer into content blocks or Anthropic's stream events.
Errors leave in Anthropic's shape (``serve/anthropic_errors.py`` rewrites the envelope
for these routes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import ValidationError
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from serve.kernel.chat_stream import ChatTurn
from serve.kernel.errors import BadRequest, validation_problem
from serve.kernel.messages_protocol import CountTokensRequest, MessagesRequest
from serve.kernel.protocol import new_id
from serve.services.chat import Answer, ChatService, RouteAsks
from serve.services.messages_convert import chat_body, chat_tools, message_object, to_messages
from serve.services.messages_stream import MessageEvents


class MessagesService:
    """``/v1/messages`` and ``/v1/messages/count_tokens``.

    Args:
        chat: The chat service every message (and every token count) is answered by.
    """

    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    async def create(self, request: MessagesRequest, asks: RouteAsks, request_info: Any) -> Answer:
        """Answer a Messages request; its message object or its event stream."""
        try:
            body = ChatCompletionRequest.model_validate(chat_body(request))
        except ValidationError as exc:
            message, param = validation_problem(exc.errors())
            raise BadRequest(message, param=param) from None
        message_id = new_id("msg_")
        answer = await self._chat.chat(body, asks, request_info)
        if answer.dispatched.stream is not None:
            events = MessageEvents(message_id, answer.dispatched.decision.target).events(answer.dispatched.stream)
            return Answer(dataclasses.replace(answer.dispatched, stream=events), headers=answer.headers)
        return Answer(answer.dispatched, message_object(message_id, request.model, ChatTurn.from_reply(answer.reply)),
                      answer.headers)

    async def count_tokens(self, request: CountTokensRequest, asks: RouteAsks, request_info: Any) -> dict[str, Any]:
        """The input tokens the request would take on the model it is routed to.

        Counted by the engine itself, with the model's tokenizer and chat template: one
        chat request of a single output token (vLLM's tokenize task is not served by Ray
        Serve LLM's engines), whose usage reports the prompt's tokens.
        """
        chat = {"model": request.model, "messages": to_messages(request), **chat_tools(request), "max_tokens": 1,
                "temperature": 0}
        if "tools" in chat:
            chat["tool_choice"] = "none"
        chat.pop("parallel_tool_calls", None)
        answer = await self._chat.chat(ChatCompletionRequest.model_validate(chat), asks, request_info)
        return {"input_tokens": int((answer.reply.get("usage") or {}).get("prompt_tokens") or 0)}
