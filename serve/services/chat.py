"""Chat and text completions: retrieval, routing, dispatch and conformance, in that order.

A chat request goes down one path: its roles are checked, it is admitted, the
retrieval step (when it names a collection) searches and gives a copy of the request
the passages, the dispatcher routes and forwards it, and on the way back a structured
reply is checked against what was asked (``serve/kernel/conformance.py``) and the
retrieval's passages and citations are attached. The request the client sent is never
changed on the way. The ingress turns the :class:`Answer` into HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from serve.kernel.chat_params import take_chat_extras
from serve.kernel.conformance import check_chat_reply, needs_check
from serve.kernel.dispatcher import Dispatched, Dispatcher, structured_fields
from serve.kernel.errors import BadRequest
from serve.kernel.protocol import CHAT_ROLES, unknown_role
from serve.kernel.routing import RouteDecision, RouteInput, route_input_from_chat
from serve.services.retrieval import Retrieval


@dataclass(frozen=True)
class RouteAsks:
    """What a request's headers ask of routing."""

    pin: Optional[str] = None
    """A model id or role that wins over ``auto`` (the ``x-route`` header)."""
    allow_random_weights: bool = False
    """``auto`` may answer with random-weight models (``x-route-random-weights: allow``)."""


@dataclass(frozen=True)
class Answer:
    """What a chat or completion request got: the dispatch (decision, hops, stream),
    the reply to send when it is not streamed, and headers of the service's own."""

    dispatched: Dispatched
    reply: Optional[dict[str, Any]] = None
    headers: dict[str, str] = field(default_factory=dict)


def _check_roles(body: Any) -> None:
    """Refuse a message role the OpenAI API does not have (chat and its dry run)."""
    if (bad := unknown_role(body.messages)) is not None:
        raise BadRequest(f"messages[{bad[0]}].role {bad[1]!r} is not one of {sorted(CHAT_ROLES)}",
                         param=f"messages[{bad[0]}].role", code="invalid_role")


def _route_input(body: Any) -> RouteInput:
    fields = {"messages", "tools", "response_format", "max_tokens", "max_completion_tokens"}
    return route_input_from_chat(body.model_dump(include=fields))


def _prompt_text(prompt: Any) -> str:
    """The text of a completions prompt (a string, or the strings of a list)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    return ""


class ChatService:
    """OpenAI chat and text completions over the graph's LLMs, ``auto`` routed.

    Args:
        dispatcher: Routing, admission, forwarding and fallback.
        retrieval: The retrieval step (its collections answer 404 when the profile has none).
    """

    def __init__(self, dispatcher: Dispatcher, retrieval: Retrieval) -> None:
        self._dispatcher = dispatcher
        self._retrieval = retrieval

    async def chat(self, body: Any, asks: RouteAsks, request_info: Any = None) -> Answer:
        """Answer a chat request (streamed or not)."""
        _check_roles(body)
        body, metadata = take_chat_extras(body)
        self._dispatcher.admit(llm=True)
        options = Retrieval.options(body)
        retrieved = None
        if options is not None:
            body, retrieved = await self._retrieval.find(body, options)
        dispatched = await self._dispatcher.send(body, "chat", _route_input(body), pin=asks.pin,
                                                 allow_random_weights=asks.allow_random_weights,
                                                 request_info=request_info)
        headers = retrieved.headers() if retrieved is not None else {}
        if dispatched.stream is not None:
            return Answer(dispatched, headers=headers)
        reply = dispatched.reply
        fields = structured_fields(body)
        if "choices" in reply and needs_check(fields):
            reply = check_chat_reply(fields, reply)
        if retrieved is not None:
            reply = retrieved.attach(reply)
        if metadata is not None:
            reply = {**reply, "metadata": metadata}
        return Answer(dispatched, reply, headers)

    async def complete(self, body: Any, asks: RouteAsks, request_info: Any = None) -> Answer:
        """Answer a text-completions request, ``auto`` routed on its prompt."""
        self._dispatcher.admit(llm=True)
        text = _prompt_text(body.prompt)
        route_input = RouteInput(text=text, last_user_text=text, max_tokens=body.max_tokens)
        dispatched = await self._dispatcher.send(body, "completions", route_input, pin=asks.pin,
                                                 allow_random_weights=asks.allow_random_weights,
                                                 request_info=request_info)
        return Answer(dispatched, dispatched.reply)

    async def route(self, body: Any, asks: RouteAsks) -> RouteDecision:
        """Dry run: the decision a chat body would get, with score and features (admitted
        as a chat request is: a dry run costs a routing decision)."""
        _check_roles(body)
        self._dispatcher.admit(llm=True)
        return await self._dispatcher.resolve(body.model, _route_input(body), asks.pin,
                                              allow_random_weights=asks.allow_random_weights)
