"""What the policies read from a request's text: the text to embed, its script, its language.

The request itself arrives as a :class:`~serve.kernel.routing.RouteInput`.
"""

from __future__ import annotations

import re

from serve.kernel.routing import RouteInput


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
