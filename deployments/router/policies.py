"""Routing policies: a score in [0, 1] for "this request needs the reasoner".

Every policy implements :class:`RoutingPolicy` and is registered by name, so the profile
chooses one (``router.policy``) and new policies plug in without touching the router.
The score comes with the features that produced it, which ``/v1/route`` shows users so
a decision can always be explained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from deployments.router.features import RouteInput


@dataclass(frozen=True)
class PolicyScore:
    """A policy's verdict: the score and the evidence behind it."""

    score: float
    features: dict[str, Any] = field(default_factory=dict)


class RoutingPolicy(Protocol):
    """The one interface all routing policies share."""

    name: str

    def score(self, request: RouteInput) -> PolicyScore:
        """Return how strongly ``request`` needs the reasoner, in [0, 1]."""
        ...


# Compensation ranges as posted: "$120k–$150k", "12-18 LPA", "€45.000 – €55.000",
# "CAD 95,000–110,000". A range, not a single figure, is the signal.
_MONEY = r"(?:[$€£₹¥]|usd|eur|gbp|inr|cad|aud|rs\.?)\s?\d[\d,.]*\s?[km]?"
_RANGE = re.compile(
    rf"{_MONEY}\s*(?:-|–|—|to)\s*(?:{_MONEY}|\d[\d,.]*\s?[km]?\b)|\d[\d,.]*\s?(?:-|–|—|to)\s?\d[\d,.]*\s?(?:lpa|lakhs?|k\b)",
    re.IGNORECASE,
)
_EQUITY = re.compile(
    r"\b(equity|stock options?|rsus?|esops?|vesting|profit[- ]sharing)\b", re.IGNORECASE
)
_HTML_TABLE = re.compile(r"<table\b", re.IGNORECASE)
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)

# Cues that a request needs multi-step thinking rather than lookup or transformation.
_REASONING_CUES: dict[str, re.Pattern[str]] = {
    "proof": re.compile(r"\b(prove|proof|show that|theorem|lemma|induction)\b", re.I),
    "step_by_step": re.compile(r"\b(step[- ]by[- ]step|think (it )?through|reason)\b", re.I),
    "math": re.compile(
        r"\b(solve|equation|integral|derivative|probability|calculate|compute)\b"
        r"|\d+\s*[\^*/]\s*\d+|[=<>]\s*\d+\s*[a-z]\b",
        re.I,
    ),
    "logic": re.compile(r"\b(puzzle|riddle|paradox|deduce|if and only if|contradiction)\b", re.I),
    "debugging": re.compile(
        r"\b(debug|race condition|deadlock|why does .* (fail|crash)|root cause|stack trace)\b",
        re.I,
    ),
    "planning": re.compile(
        r"\b(plan|schedule|optimi[sz]e|trade-?offs?|constraints?|allocate)\b", re.I
    ),
    "compare": re.compile(r"\b(compare|evaluate|analy[sz]e|justify|critique)\b", re.I),
}


@dataclass(frozen=True)
class HeuristicPolicy:
    """Weighted textual signals from the design: length, posting complexity, cues.

    Args:
        long_context_chars: prompt length at which the length signal saturates.
    """

    long_context_chars: int = 12_000
    name: str = "heuristic"

    # Weights sum above 1 on purpose: any two strong signals are enough.
    _W_CUES = 0.35  # per distinct reasoning-cue word, up to two
    _W_LENGTH = 0.3
    _W_RANGE = 0.2
    _W_EQUITY = 0.15
    _W_TABLES = 0.2

    def score(self, request: RouteInput) -> PolicyScore:
        text = request.text
        cues = sorted(name for name, rx in _REASONING_CUES.items() if rx.search(text))
        # Distinct cue words, so "solve this equation" counts twice but "solve" twice once.
        cue_hits = {
            match.group(0).lower() for rx in _REASONING_CUES.values() for match in rx.finditer(text)
        }
        length_ratio = min(len(text) / self.long_context_chars, 1.0)
        has_range = bool(_RANGE.search(text))
        has_equity = bool(_EQUITY.search(text))
        tables = len(_HTML_TABLE.findall(text)) + len(_MD_TABLE_RULE.findall(text))

        score = self._W_CUES * min(len(cue_hits), 2) + self._W_LENGTH * length_ratio
        if has_range:
            score += self._W_RANGE
        if has_equity:
            score += self._W_EQUITY
        if tables >= 2:
            score += self._W_TABLES
        return PolicyScore(
            score=round(min(score, 1.0), 4),
            features={
                "chars": len(text),
                "length_ratio": round(length_ratio, 4),
                "reasoning_cues": cues,
                "cue_hits": len(cue_hits),
                "compensation_range": has_range,
                "equity": has_equity,
                "tables": tables,
            },
        )


PolicyFactory = Callable[..., RoutingPolicy]

POLICIES: dict[str, PolicyFactory] = {"heuristic": HeuristicPolicy}


def make_policy(name: str, **options: Any) -> RoutingPolicy:
    """Instantiate the policy registered as ``name``.

    Raises:
        KeyError: no policy has that name.
    """
    if name not in POLICIES:
        raise KeyError(f"unknown routing policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name](**options)
