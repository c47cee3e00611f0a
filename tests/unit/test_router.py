"""The heuristic policy and the decision rules, without Ray."""

from __future__ import annotations

import pytest

from deployments.router.decision import decide

from deployments.router.policies import HeuristicPolicy, make_policy
from serve.kernel.config import RouterSpec
from serve.kernel.routing import RouteInput, RouteTargets, route_input_from_chat

#: The heuristic policy as the profile's defaults build it.
HEURISTIC = HeuristicPolicy(long_context_chars=RouterSpec().long_context_chars)

TARGETS = RouteTargets(extractor="ext", reasoner="rea", extractor_max_model_len=4096, reasoner_max_model_len=8192)


def route(text: str, **kwargs):
    return decide(RouteInput(text=text, **kwargs), policy=HEURISTIC, threshold=0.5, targets=TARGETS)


@pytest.mark.parametrize(
    "text",
    [
        "Classify this message as billing, support or sales: my card was charged twice.",
        "Translate to French: good morning",
        "Hello! How are you today?",
        "Extract the job title from: Senior Backend Engineer, Austin TX.",
        "नमस्ते, आप कैसे हैं?",
    ],
)
def test_simple_requests_go_to_the_extractor(text):
    decision = route(text)
    assert decision.role == "extractor" and decision.target == "ext"
    assert decision.score < 0.5


@pytest.mark.parametrize(
    "text",
    [
        "Prove by induction that 1 + 3 + ... + (2n-1) = n^2. Think step by step.",
        "Solve the equation 3x + 7 = 22 and then compute the probability that a die shows 6 twice.",
        "Debug this race condition: two threads deadlock when... find the root cause and plan a fix under these constraints.",
    ],
)
def test_reasoning_requests_go_to_the_reasoner(text):
    decision = route(text)
    assert decision.role == "reasoner" and decision.target == "rea"
    assert decision.score >= 0.5
    assert decision.features["reasoning_cues"]


def test_complex_posting_signals_add_up():
    posting = (
        "Staff Engineer. Compensation: $180k – $240k base plus equity (RSUs, 4-year vesting). "
        "<table><tr><td>Level</td></tr></table><table><tr><td>Bonus</td></tr></table> "
        + "We build distributed systems. " * 200
    )
    features = HEURISTIC.score(RouteInput(text=posting)).features
    assert features["compensation_range"] and features["equity"] and features["tables"] == 2
    assert route(posting).role == "reasoner"


@pytest.mark.parametrize("text", ["₹12-18 LPA", "€45.000 – €55.000", "CAD 95,000–110,000", "$45-$55/hr"])
def test_compensation_range_formats(text):
    assert HEURISTIC.score(RouteInput(text=text)).features["compensation_range"]


def test_single_salary_figure_is_not_a_range():
    assert not HEURISTIC.score(RouteInput(text="Salary: $120,000 per year")).features["compensation_range"]


def test_context_too_long_for_extractor_goes_to_reasoner():
    decision = route("hello " * 4000)  # ~6000 tokens: over 4096, under 8192
    assert decision.role == "reasoner"
    assert "context exceeds extractor" in decision.reason


def test_scores_stay_in_unit_interval():
    text = "prove step by step solve equation puzzle debug plan compare $1k-$2k equity " * 500
    assert 0.0 <= HEURISTIC.score(RouteInput(text=text)).score <= 1.0


def test_registry():

    assert make_policy("heuristic", RouterSpec(long_context_chars=100)).long_context_chars == 100
    with pytest.raises(ValueError, match="exemplars"):
        make_policy("semantic", RouterSpec())
    with pytest.raises(KeyError, match="unknown routing policy"):
        make_policy("nope", RouterSpec())


def test_route_input_from_chat_reads_roles_and_parts():
    body = {
        "messages": [
            {"role": "system", "content": "You extract data."},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "image_url", "image_url": {}}]},
            {"role": "assistant", "content": "ignored answer"},
            {"role": "user", "content": "final question"},
        ],
        "tools": [{"type": "function"}],
        "response_format": {"type": "json_schema"},
        "max_tokens": 50,
    }
    ri = route_input_from_chat(body)
    assert "You extract data." in ri.text and "part one" in ri.text and "final question" in ri.text
    assert "ignored answer" not in ri.text
    assert ri.last_user_text == "final question"
    assert ri.has_tools and ri.wants_json and ri.max_tokens == 50 and ri.num_messages == 4
