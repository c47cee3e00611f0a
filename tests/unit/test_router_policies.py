"""Semantic and hybrid policies on hand-made vectors; the exemplar and evaluation data."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest

from deployments.router.exemplars import load_exemplars
from deployments.router.features import latin_share, reads_as_english
from deployments.router.policies import ExemplarVectors, HeuristicPolicy, HybridPolicy, SemanticPolicy, make_policy
from serve.kernel.config import CONFIGS_DIR, PROJECT_ROOT, RouterSpec
from serve.kernel.routing import RouteInput

#: The heuristic policy as the profile's defaults build it.
HEURISTIC = HeuristicPolicy(long_context_chars=RouterSpec().long_context_chars)

EVAL = PROJECT_ROOT / "tests" / "data" / "router_eval.jsonl"


def unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# Two clusters: "reasoner" prompts near +x, "extractor" prompts near +y.
VECTORS = np.stack([unit(1, 0.1, 0), unit(1, -0.1, 0), unit(0.9, 0, 0.1), unit(0.1, 1, 0), unit(-0.1, 1, 0), unit(0, 0.9, 0.1)])
LABELS = (1, 1, 1, 0, 0, 0)
CATS = ("math", "proof", "logic", "lookup", "chitchat", "rewriting")


def request(*xs, text="x"):
    return RouteInput(text=text, embedding=tuple(unit(*xs).tolist()))


def test_semantic_votes_with_its_neighbours():
    policy = SemanticPolicy(VECTORS, LABELS, CATS, k=3)
    near_reasoner = policy.score(request(1, 0.05, 0))
    near_extractor = policy.score(request(0.05, 1, 0))
    assert near_reasoner.score > 0.95 and near_extractor.score < 0.05
    assert near_reasoner.features["neighbours"][0]["category"] in {"math", "proof", "logic"}
    assert near_reasoner.features["reasoner_votes"] == 3


def test_semantic_in_between_is_uncertain_and_needs_an_embedding():
    policy = SemanticPolicy(VECTORS, LABELS, CATS, k=6)
    middle = policy.score(request(1, 1, 0)).score
    assert 0.2 < middle < 0.8
    with pytest.raises(ValueError, match="embedding"):
        policy.score(RouteInput(text="no vector"))


def test_hybrid_blends_scores():
    semantic = SemanticPolicy(VECTORS, LABELS, CATS, k=3)
    hybrid = HybridPolicy(HEURISTIC, semantic, semantic_weight=0.5)
    verdict = hybrid.score(request(0, 1, 0, text="Prove by induction step by step"))
    assert verdict.features["heuristic_score"] == 1.0 and verdict.features["semantic_score"] < 0.05
    assert verdict.score == pytest.approx(0.5 * verdict.features["semantic_score"] + 0.5, abs=1e-3)


# Written for these tests: in neither the exemplars nor the evaluation set.
REASONING_ELSEWHERE = [
    "सिद्ध कीजिए कि 7 एक अभाज्य संख्या है।",                                   # Hindi: prove
    "दोन शहरांमधील राहणीमानाच्या खर्चाची तुलना करा आणि निर्णय घ्या.",             # Marathi: compare
    "Is puzzle ka jawab kya hai? Step by step samjhao.",                        # Hinglish
    "Berechne die Fläche eines Kreises mit Radius 3 und begründe die Formel.",  # German
    "Resuelve la ecuación x² − 5x + 6 = 0.",                                    # Spanish
    "Pourquoi mon programme plante-t-il au démarrage ? Aide-moi à comprendre.", # French
    "Compare as duas propostas e diga qual é a melhor estratégia.",             # Portuguese
]
LOOKUPS_ELSEWHERE = [
    "इस कंपनी का पता क्या है?",
    "माझा पत्ता लिहून घ्या.",
    "Kal chhutti hai kya?",
    "Wo ist der nächste Bahnhof?",
    "¿Qué hora es en Lima?",
    "Quel temps fait-il à Nice ?",
    "Qual é o seu nome?",
]


@pytest.mark.parametrize("text", REASONING_ELSEWHERE)
def test_reasoning_cues_are_heard_in_seven_more_languages(text):
    verdict = HEURISTIC.score(RouteInput(text=text, last_user_text=text))
    assert verdict.score >= 0.5 and verdict.features["reasoning_cues"], verdict.features


@pytest.mark.parametrize("text", LOOKUPS_ELSEWHERE)
def test_plain_requests_in_those_languages_stay_with_the_extractor(text):
    assert HEURISTIC.score(RouteInput(text=text, last_user_text=text)).score < 0.5


def test_what_reads_as_english_to_an_english_only_embedder():
    assert latin_share("सिद्ध कीजिए") == 0.0 and latin_share("") == 1.0
    assert reads_as_english("Why does my build fail on the CI server?")
    assert reads_as_english("Sort these: 3, 1, 2")  # too short to tell: English
    assert not reads_as_english("Warum hängt mein Programm beim Start?")
    assert not reads_as_english("Привет, как дела сегодня?")
    assert not reads_as_english("¿Por qué mi consulta tarda tanto en responder?")


def test_hybrid_trusts_its_heuristic_where_an_english_only_embedder_cannot_read():
    semantic = SemanticPolicy(VECTORS, LABELS, CATS, k=3)  # the vector below votes "extractor"
    text = "सिद्ध कीजिए कि दो सम संख्याओं का योग सम होता है।"
    english_only = HybridPolicy(HEURISTIC, semantic, semantic_weight=0.7)
    verdict = english_only.score(request(0, 1, 0, text=text))
    assert verdict.features["semantic_weight"] == 0.0 and verdict.score >= 0.5
    multilingual = HybridPolicy(HEURISTIC, semantic, semantic_weight=0.7, multilingual=True)
    assert multilingual.score(request(0, 1, 0, text=text)).score < 0.5, "a multilingual embedder keeps its say"
    english = english_only.score(request(0, 1, 0, text="Prove that the sum of two even numbers is even."))
    assert english.features["semantic_weight"] == 0.7


def test_registry_builds_every_policy():
    vectors = ExemplarVectors(VECTORS, LABELS, CATS)
    for name in ("heuristic", "semantic", "hybrid"):
        assert make_policy(name, RouterSpec(policy=name), vectors).name == name


def test_exemplars_load_and_cover_both_roles():
    exemplars = load_exemplars(CONFIGS_DIR / "router" / "exemplars.txt")
    labels = Counter(e.label for e in exemplars)
    assert labels["extractor"] >= 40 and labels["reasoner"] >= 40


def test_bad_exemplar_lines_are_reported(tmp_path):
    path = tmp_path / "ex.txt"
    path.write_text("# comment\nextractor|lookup|fine\nmaybe|x|unknown label\n")
    with pytest.raises(ValueError, match="ex.txt:3"):
        load_exemplars(path)


def test_evaluation_set_is_large_varied_and_disjoint_from_exemplars():
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 300
    categories = Counter(r["category"] for r in rows)
    for needed in ("extraction", "classification", "lookup", "rewriting", "chitchat", "multilingual",
                   "math", "proof", "logic", "debugging", "planning", "long_posting", "multilingual_reasoning"):
        assert categories[needed] >= 10, needed
    exemplars = {e.prompt for e in load_exemplars(CONFIGS_DIR / "router" / "exemplars.txt")}
    assert not exemplars & {r["prompt"] for r in rows}
    assert len({r["prompt"] for r in rows}) == len(rows)


@pytest.mark.parametrize(
    "text",
    [
        "\n" * 20_000,  # the old table regex: 22.8 s at 2,000 newlines, cubic
        " \n" * 50_000,
        "1" * 100_000,  # the old range regex: quadratic on digit runs
        ("1" * 30 + "-") * 5_000,
        "$1,000 " * 20_000,
        "| --- |" + " " * 100_000,
        "x" * 2_000_000,  # a body at the size limit: only SCAN_CHARS are scanned
    ],
    ids=["newlines", "blank-lines", "digits", "digit-dashes", "money", "table-spaces", "2-MiB"],
)
def test_heuristic_features_are_linear_on_hostile_text(text):
    started = time.perf_counter()
    HEURISTIC.score(RouteInput(text=text, last_user_text=text))
    assert time.perf_counter() - started < 1.0, "every scan over request text is linear or capped"


def test_markdown_table_rules_are_still_recognised():
    from deployments.router.policies import markdown_table_rules

    table = "| a | b |\n|---|:---:|\n| 1 | 2 |\n\nname | pay\n--- | ---\nx | y\n"
    assert markdown_table_rules(table) == 2
    assert markdown_table_rules("---\n\n----\n| - | - |\n") == 0  # rules and short dashes are not tables
    features = HEURISTIC.score(RouteInput(text=table)).features
    assert features["tables"] == 2
