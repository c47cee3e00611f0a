"""What the router looks at: a compact, Ray-free view of a chat request.

The ingress turns each chat body into a :class:`RouteInput` (plain text and a few flags),
so that routing policies never depend on the OpenAI protocol models and the router
deployment receives a small payload instead of the whole request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class RouteInput:
    """The parts of a chat request that routing policies use."""

    text: str
    """System and user text, joined; assistant turns are left out."""
    last_user_text: str = ""
    num_messages: int = 0
    has_tools: bool = False
    wants_json: bool = False
    max_tokens: int | None = None
    embedding: tuple[float, ...] | None = None
    """The text's embedding, filled in by the router for policies that need one."""


def text_to_embed(request: RouteInput, max_chars: int) -> str:
    """The text the semantic policy embeds for ``request``: the start of the last user
    message, where a request states its intent (``router.embed_chars`` long)."""
    return (request.last_user_text or request.text)[:max_chars]


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    return str(content)


def last_user_text(messages: Iterable[Any]) -> str:
    """The text of the last user message (its text parts joined), or ``""``."""
    last = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            last = _content_text(message.get("content"))
    return last


def route_input_from_chat(body: dict[str, Any]) -> RouteInput:
    """Build a :class:`RouteInput` from an OpenAI chat-completions body (a dict)."""
    messages = body.get("messages") or []
    texts = [
        _content_text(m.get("content")) for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer", "user")
    ]
    response_format = body.get("response_format") or {}
    wants_json = isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return RouteInput(
        text="\n\n".join(texts),
        last_user_text=last_user_text(messages),
        num_messages=len(messages),
        has_tools=bool(body.get("tools")),
        wants_json=wants_json,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )
