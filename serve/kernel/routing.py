"""Routing's data: what the router reads from a request, and what it decides.

:class:`RouteInput` is a compact, Ray-free view of a chat request (plain text and a few
flags), so routing policies never depend on the OpenAI protocol models and the Router
deployment receives a small payload instead of the whole request. :class:`RouteDecision`
is the router's answer, the dispatcher's final word and the body of ``POST /v1/route``.
Both the HTTP shell and the Router and Extraction deployments use them, so they live in
the kernel; the scoring itself stays in ``deployments/router/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field


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
    embedding: Sequence[float] | None = None
    """The text's embedding (a vector), filled in by the router for policies that need one."""


@dataclass(frozen=True)
class RouteTargets:
    """The two LLM roles the router chooses between, with their context limits."""

    extractor: str
    reasoner: str
    extractor_max_model_len: int
    reasoner_max_model_len: int

    @classmethod
    def of(cls, profile) -> "RouteTargets":
        """The targets of a profile (``serve.kernel.config.Profile``)."""
        return cls(extractor=profile.extractor.model_id, reasoner=profile.reasoner.model_id,
                   extractor_max_model_len=profile.extractor.max_model_len,
                   reasoner_max_model_len=profile.reasoner.max_model_len)


class RouteDecision(BaseModel):
    """Where a request goes and why: the router's answer, the dispatcher's final word
    (after pins, admission and fallback), and the body of ``POST /v1/route``."""

    model_config = ConfigDict(frozen=True)

    target: str = Field(description="Model id the request would be sent to.")
    role: str = Field(description="extractor or reasoner.")
    reason: str = Field(description="Why, in one line (also the x-route-reason header).")
    policy: str
    score: float
    threshold: float
    features: dict[str, Any] = Field(default_factory=dict)
    pinned: bool = Field(False, description="True when the client named the model.")
    random_weights_allowed: bool = Field(
        False, description="The request let `auto` answer with random-weight models (`x-route-random-weights: allow`), "
        "in its decision and its fallbacks, in a profile that does not (router.allow_random_weights).")


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
