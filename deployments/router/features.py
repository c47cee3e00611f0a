"""What the router looks at: a compact, Ray-free view of a chat request.

The ingress turns each chat body into a :class:`RouteInput` (plain text and a few flags),
so that routing policies never depend on the OpenAI protocol models and the router
deployment receives a small payload instead of the whole request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


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


def text_to_embed(request: RouteInput, max_chars: int) -> str:
    """The text the semantic policy embeds for ``request``: the start of the last user
    message, where a request states its intent (``router.embed_chars`` long)."""
    return (request.last_user_text or request.text)[:max_chars]


#: Characters whose script :func:`latin_share` samples: the start of the message states
#: its language as well as the whole does.
SCRIPT_SAMPLE_CHARS = 400


def latin_share(text: str) -> float:
    """The share of the letters at the start of ``text`` that are Latin script (1.0 when
    it has none): English-only embedding models see little meaning in other scripts."""
    letters = [c for c in text[:SCRIPT_SAMPLE_CHARS] if c.isalpha()]
    if not letters:
        return 1.0
    # Basic Latin to Latin Extended-B, then Latin Extended Additional (Vietnamese).
    latin = sum(1 for c in letters if c < "\u0250" or "\u1e00" <= c <= "\u1eff")
    return latin / len(letters)


#: English words that rarely spell a word of the other languages the router serves
#: (no "a", "in", "on", "was", "do", "me": Spanish, German, French or Portuguese words too).
_ENGLISH_MARKERS = frozenset(
    "the is are of and to for with this that what how why which my your you can does be at by not if from have has "
    "should would there their".split()
)
_WORD = re.compile(r"[a-z']{1,20}")


def reads_as_english(text: str) -> bool:
    """Whether the start of ``text`` is English to an English-only embedding model: Latin
    script, and one of English's everyday words among its first words (a message of
    three words or fewer counts as English: too short to tell)."""
    sample = text[:SCRIPT_SAMPLE_CHARS]
    if latin_share(sample) < 0.5:
        return False
    words = _WORD.findall(sample.lower())
    return len(words) <= 3 or not _ENGLISH_MARKERS.isdisjoint(words)


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
