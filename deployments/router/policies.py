"""Routing policies: a score in [0, 1] for "this request needs the reasoner".

Every policy implements :class:`RoutingPolicy` and is registered by name, so the profile
chooses one (``router.policy``) and new policies plug in without touching the router.
The score comes with the features that produced it, which ``/v1/route`` shows users so
a decision can always be explained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from deployments.router.features import reads_as_english

from serve.kernel.routing import RouteInput


@dataclass(frozen=True)
class PolicyScore:
    """A policy's verdict: the score and the evidence behind it."""

    score: float
    features: dict[str, Any] = field(default_factory=dict)


class RoutingPolicy(Protocol):
    """The one interface all routing policies share."""

    name: str
    #: True when ``score`` needs ``request.embedding`` filled in.
    needs_embedding: bool

    def score(self, request: RouteInput) -> PolicyScore:
        """Return how strongly ``request`` needs the reasoner, in [0, 1]."""
        ...


# Compensation ranges as posted: "$120k–$150k", "12-18 LPA", "€45.000 – €55.000",
# "CAD 95,000–110,000". A range, not a single figure, is the signal.
# Every repetition that can start at any position is bounded, so a run of digits costs
# linear time (an unbounded ``\d[\d,.]*`` tried at each digit of a long run is quadratic).
_NUMBER = r"\d[\d,.]{0,20}"
_MONEY = rf"(?:[$€£₹¥]|usd|eur|gbp|inr|cad|aud|rs\.?)\s?{_NUMBER}\s?[km]?"
_RANGE = re.compile(
    rf"{_MONEY}\s*(?:-|–|—|to)\s*(?:{_MONEY}|{_NUMBER}\s?[km]?\b)|{_NUMBER}\s?(?:-|–|—|to)\s?{_NUMBER}\s?(?:lpa|lakhs?|k\b)",
    re.IGNORECASE,
)
_EQUITY = re.compile(
    r"\b(equity|stock options?|rsus?|esops?|vesting|profit[- ]sharing)\b", re.IGNORECASE
)
_HTML_TABLE = re.compile(r"<table\b", re.IGNORECASE)
_MD_RULE_CELL = re.compile(r":?-{3,}:?")
#: Request text the feature scans read: the length signal saturates far below this, and
#: no cue needs more, so a 2 MiB body costs what 100 KB does.
SCAN_CHARS = 100_000


def markdown_table_rules(text: str) -> int:
    """Lines that are a Markdown table's header rule (``|---|:--:|``), in linear time.

    Line by line in Python: the MULTILINE regex this replaces let its leading whitespace
    class run across newlines, which took cubic time on runs of blank lines (2,000
    newlines: 22.8 s).
    """
    count = 0
    for line in text.splitlines():
        cells = line.strip().strip("|").split("|")
        if len(cells) >= 2 and all(_MD_RULE_CELL.fullmatch(cell.strip()) for cell in cells):
            count += 1
    return count


# Cues that a request needs multi-step thinking rather than lookup or transformation.
_REASONING_CUES: dict[str, re.Pattern[str]] = {
    "proof": re.compile(r"\b(prove|proof|show that|theorem|lemma|induction|irrational|countable)\b", re.I),
    "step_by_step": re.compile(
        r"\b(step[- ]by[- ]step|think (it )?through|reason(ing)? (it )?(out|through)|derive|work (it )?out|explain (why|how|each step)|justify)\b",
        re.I,
    ),
    "math": re.compile(
        r"\b(solve|equation|integral|integrate|derivative|probability|calculate|compute|expected (value|number)|"
        r"how many (ways|days|years)|find (all|the (minimum|maximum|limit)))\b"
        r"|\d\s*[\^*/]\s*\d|\b[a-z]\^\d|[=<>]\s*-?\d+\s*[a-z]\b|\b\d+\s*[a-z]\s*[+-]",
        re.I,
    ),
    "logic": re.compile(
        r"\b(puzzle|riddle|paradox|deduce|if and only if|contradiction|knights?|knaves?|always lies|weighings?|fallacy)\b",
        re.I,
    ),
    "debugging": re.compile(
        r"\b(debug|race condition|deadlock|root cause|stack trace|leaks?|segfaults?|flaky|diagnose|"
        r"why (does|do|did|would|is)|what'?s wrong|find the bug|hangs?)\b",
        re.I,
    ),
    "planning": re.compile(
        r"\b(plan|schedule|optimi[sz]e|minimi[sz]e|maximi[sz]e|trade-?offs?|constraints?|allocate|rotation|"
        r"roadmap|strategy|migration|capacity)\b",
        re.I,
    ),
    "compare": re.compile(r"\b(compare|evaluate|analy[sz]e|critique|which (is|pays) (better|more))\b", re.I),
}


# The same intents in Hindi, Marathi, Hinglish, German, Spanish, French and Portuguese
# (written for routing, not translated from the evaluation set). Devanagari vowel signs
# are not word characters to ``re``, so those words carry no ``\b`` and are chosen to be
# distinctive as substrings.
_INTL_CUES: dict[str, re.Pattern[str]] = {
    "proof": re.compile(
        r"\b(beweise|beweis|zeige,? dass|demuestra|demostrar|demostraci[oó]n|d[ée]montre[rz]?|prouve[rz]?|"
        r"d[ée]monstration|demonstre|demonstra[cç][aã]o|mostre que|prove karo|saabit karo|irrationale?|irracional|irrationnel)\b"
        r"|सिद्ध|अपरिमेय",
        re.I,
    ),
    "step_by_step": re.compile(
        r"\b(schritt f[üu]r schritt|schrittweise|rechenweg|begr[üu]nde|paso a paso|razona|justifica|"
        r"[ée]tape par [ée]tape|raisonnement|justifie[rz]?|passo a passo|justifique|samjhao|logic (ke|se) (saath|samjhao))\b"
        r"|चरण दर चरण|क्रमशः|पायरीपायरीने|टप्प्याटप्प्याने|कारण स्पष्ट|तर्क समझा",
        re.I,
    ),
    "math": re.compile(
        r"\b(berechne|löse|gleichung|wahrscheinlichkeit|zinseszins|calcula|resuelve|resu[ée]lvelo|ecuaci[oó]n|"
        r"probabilidad|calcule[rz]?|r[ée]sous|r[ée]soudre|[ée]quation|probabilit[ée]|resolva|equa[cç][aã]o|"
        r"probabilidade|juros compostos|hisaab|solve karo)\b"
        r"|हल कर|हल कीज|गणना|समीकरण|प्रायिकता|सोडवा|गणित",
        re.I,
    ),
    "logic": re.compile(
        r"\b(r[äa]tsel|widerspruch|acertijo|paradoja|contradicci[oó]n|[ée]nigme|paradoxe|enigma|paradoxo|"
        r"contradi[cç][aã]o|paheli)\b|पहेली|कोडे",
        re.I,
    ),
    "debugging": re.compile(
        r"\b(warum (h[äa]ngt|wirft|st[üu]rzt|ist|wird)|ursache|absturz|por qu[ée] (mi|el|la|se)|depura|"
        r"pourquoi (mon|ma|le|la|est)|d[ée]bogue|fuite|por que (meu|minha|o|a)|depure|diagnosti\w*|kyun (ho|hai|nahi)|galti kya)\b"
        r"|क्यों होता|गलती क्या|त्रुटि",
        re.I,
    ),
    "planning": re.compile(
        r"\b(plane (die|den|das|eine[n]?|mir)|planung|zeitplan|migrationsplan|strategie|planifica|planificar|estrategia|cronograma|optimiza|"
        r"planifie[rz]?|plan de|strat[ée]gie|optimise[rz]?|planeje|plano de|elabore um plano|estrat[ée]gia|otimize|plan banao)\b"
        r"|योजना|नियोजन",
        re.I,
    ),
    "compare": re.compile(
        r"\b(vergleiche|bewerte|analysiere|compara|eval[uú]a|analiza|compare[rz]?|[ée]value[rz]?|analyse[rz]?|"
        r"avalie|analise|compare karo)\b|तुलना",
        re.I,
    ),
}
#: Every cue pattern, by intent: English first, then the other languages.
CUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (*_REASONING_CUES.items(), *_INTL_CUES.items())

@dataclass(frozen=True)
class HeuristicPolicy:
    """Weighted textual signals from the design: length, posting complexity, cues.

    Args:
        long_context_chars: prompt length at which the length signal saturates
            (``router.long_context_chars``; the profile's spec holds the default).
    """

    long_context_chars: int
    name: str = "heuristic"
    needs_embedding: bool = False

    # Weights sum above 1 on purpose: any two strong signals are enough.
    _W_CUES = 0.5  # per distinct reasoning-cue word, up to two: one cue is enough
    _W_LENGTH = 0.3
    _W_RANGE = 0.2
    _W_EQUITY = 0.15
    _W_TABLES = 0.2

    def score(self, request: RouteInput) -> PolicyScore:
        text = request.text[:SCAN_CHARS]
        # One pass per pattern gives both the intents heard and the distinct cue words, so
        # "solve this equation" counts twice but "solve" twice once.
        intents: set[str] = set()
        cue_hits: set[str] = set()
        for name, rx in CUE_PATTERNS:
            for match in rx.finditer(text):
                intents.add(name)
                cue_hits.add(match.group(0).lower())
        cues = sorted(intents)
        length_ratio = min(len(request.text) / self.long_context_chars, 1.0)
        has_range = bool(_RANGE.search(text))
        has_equity = bool(_EQUITY.search(text))
        tables = len(_HTML_TABLE.findall(text)) + markdown_table_rules(text)

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
                "chars": len(request.text),
                "length_ratio": round(length_ratio, 4),
                "reasoning_cues": cues,
                "cue_hits": len(cue_hits),
                "compensation_range": has_range,
                "equity": has_equity,
                "tables": tables,
            },
        )


class SemanticPolicy:
    """Nearest labeled exemplars: the share of reasoner votes among the k most similar.

    Votes are weighted by a softmax over cosine similarity, so a near-duplicate of an
    exemplar counts far more than a loose neighbour.

    Args:
        vectors: L2-normalised exemplar embeddings, shape (n, d).
        labels: 1 for exemplars that need the reasoner, 0 otherwise.
        categories: exemplar categories (for the explanation only).
        k: neighbours that vote (``router.semantic_k``).
        temperature: softmax temperature over similarities.
    """

    name = "semantic"
    needs_embedding = True

    def __init__(self, vectors: np.ndarray, labels: Sequence[int], categories: Sequence[str], *, k: int, temperature: float = 0.05) -> None:
        self._vectors = np.asarray(vectors, dtype=np.float32)
        self._labels = np.asarray(labels, dtype=np.float32)
        self._categories = list(categories)
        self._k = min(k, len(self._labels))
        self._temperature = temperature

    def score(self, request: RouteInput) -> PolicyScore:
        if request.embedding is None:
            raise ValueError("the semantic policy needs request.embedding")
        sims = self._vectors @ np.asarray(request.embedding, dtype=np.float32)
        top = np.argpartition(-sims, self._k - 1)[: self._k]
        top = top[np.argsort(-sims[top])]
        weights = np.exp((sims[top] - sims[top[0]]) / self._temperature)
        score = float((weights * self._labels[top]).sum() / weights.sum())
        return PolicyScore(
            score=round(score, 4),
            features={
                "neighbours": [
                    {"category": self._categories[i], "label": "reasoner" if self._labels[i] else "extractor", "similarity": round(float(sims[i]), 3)}
                    for i in top[:3]
                ],
                "reasoner_votes": int(self._labels[top].sum()),
                "k": self._k,
            },
        )


class HybridPolicy:
    """A weighted blend: meaning from the semantic policy, hard signals from the heuristic.

    The heuristic sees what embeddings of a truncated prompt miss (length, compensation
    ranges, equity, tables); the semantic policy sees what keyword rules miss. With an
    English-only embedding model (``multilingual=False``), a message that does not read
    as English (another script, or Latin script with none of English's everyday words)
    is decided by the heuristic alone: the model's vectors for it carry too little
    meaning to outvote the heuristic's cues, which are written in those languages too.
    """

    name = "hybrid"
    needs_embedding = True

    def __init__(self, heuristic: HeuristicPolicy, semantic: SemanticPolicy, *, semantic_weight: float,
                 multilingual: bool = False) -> None:
        self._heuristic = heuristic
        self._semantic = semantic
        self._weight = semantic_weight
        self._multilingual = multilingual

    def score(self, request: RouteInput) -> PolicyScore:
        h = self._heuristic.score(request)
        s = self._semantic.score(request)
        weight = self._weight
        if not self._multilingual and not reads_as_english(request.last_user_text or request.text):
            weight = 0.0
        score = weight * s.score + (1 - weight) * h.score
        return PolicyScore(
            score=round(min(max(score, 0.0), 1.0), 4),
            features={"semantic_score": s.score, "heuristic_score": h.score, "semantic_weight": weight,
                      "semantic": s.features, "heuristic": h.features},
        )


@dataclass(frozen=True)
class ExemplarVectors:
    """Embedded exemplars, ready for the semantic and hybrid policies."""

    vectors: np.ndarray
    labels: tuple[int, ...]
    categories: tuple[str, ...]
    #: Whether the model that embedded them understands many languages (``embedder.multilingual``).
    multilingual: bool = False


# Each factory takes the profile's ``RouterSpec``, the one place its defaults live.
def _heuristic(spec, exemplars: Optional[ExemplarVectors]) -> RoutingPolicy:
    return HeuristicPolicy(long_context_chars=spec.long_context_chars)


def _semantic(spec, exemplars: Optional[ExemplarVectors]) -> RoutingPolicy:
    if exemplars is None:
        raise ValueError("the semantic policy needs embedded exemplars")
    return SemanticPolicy(exemplars.vectors, exemplars.labels, exemplars.categories, k=spec.semantic_k)


def _hybrid(spec, exemplars: Optional[ExemplarVectors]) -> RoutingPolicy:
    return HybridPolicy(_heuristic(spec, exemplars), _semantic(spec, exemplars), semantic_weight=spec.hybrid_semantic_weight,
                        multilingual=exemplars.multilingual)


PolicyFactory = Callable[[Any, Optional[ExemplarVectors]], RoutingPolicy]

#: Policies by the name a profile uses in ``router.policy``.
POLICIES: dict[str, PolicyFactory] = {"heuristic": _heuristic, "semantic": _semantic, "hybrid": _hybrid}
NEEDS_EXEMPLARS = frozenset({"semantic", "hybrid"})


def make_policy(name: str, spec: Any, exemplars: Optional[ExemplarVectors] = None) -> RoutingPolicy:
    """Instantiate the policy registered as ``name`` for a ``RouterSpec``.

    Raises:
        KeyError: no policy has that name.
    """
    if name not in POLICIES:
        raise KeyError(f"unknown routing policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name](spec, exemplars)
