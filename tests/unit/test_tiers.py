"""``auto`` over N models: the router's score placed on the profile's tiers, awake-aware."""

from __future__ import annotations

from deployments.router.decision import RouteDecision
from serve.config import load_profile
from serve.health import HealthPicture
from serve.tiers import Tiers

SWAP = load_profile("cpu-swap")  # extractor from 0, reasoner from 0.5, heavy from 0.9; margin 0.1
EXTRACTOR, REASONER, HEAVY = (spec.model_id for spec in SWAP.models)


def decision(score: float, role: str = None, reason: str = "router") -> RouteDecision:
    role = role or ("reasoner" if score >= 0.5 else "extractor")
    return RouteDecision(target=REASONER if role == "reasoner" else EXTRACTOR, role=role, reason=reason,
                         policy="hybrid", score=score, threshold=0.5)


def picture(**states: str) -> HealthPicture:
    health = HealthPicture([])
    health.model_states = {EXTRACTOR: "awake", REASONER: "awake", HEAVY: "awake", **states}
    return health


def test_the_tiers_are_the_profiles_models_lightest_first():
    assert [(t.floor, t.model) for t in Tiers(SWAP).tiers] == [(0.0, EXTRACTOR), (0.5, REASONER), (0.9, HEAVY)]


def test_a_score_that_reaches_a_higher_tier_goes_there():
    placed = Tiers(SWAP).place(decision(0.97), picture())
    assert placed.target == HEAVY and placed.role == "heavy"
    assert placed.reason.startswith("tier heavy: score 0.97 >= 0.90; router")
    unchanged = decision(0.7)
    assert Tiers(SWAP).place(unchanged, picture()) is unchanged


def test_near_a_sleeping_tiers_boundary_the_awake_tier_below_is_preferred():
    placed = Tiers(SWAP).place(decision(0.93), picture(**{HEAVY: "asleep"}))
    assert placed.target == REASONER
    assert placed.reason.startswith(f"residency: {HEAVY} is asleep and the score 0.93 is within 0.10 of its tier (0.90)")
    far = Tiers(SWAP).place(decision(1.0), picture(**{HEAVY: "asleep"}))
    assert far.target == HEAVY, "well inside its tier, the request waits for the wake"
    both = Tiers(SWAP).place(decision(0.93), picture(**{HEAVY: "asleep", REASONER: "asleep"}))
    assert both.target == HEAVY, "nothing awake below: no reason to step down"


def test_the_reasoner_asleep_near_the_threshold_sends_the_request_to_the_extractor():
    placed = Tiers(SWAP).place(decision(0.55), picture(**{REASONER: "waking"}))
    assert placed.target == EXTRACTOR and placed.role == "extractor" and "is waking" in placed.reason


def test_a_decision_taken_on_other_grounds_than_the_score_stands():
    context = decision(0.2, role="reasoner", reason="context exceeds extractor max_model_len")
    assert Tiers(SWAP).place(context, picture(**{REASONER: "asleep"})) is context


def test_profiles_without_more_tiers_keep_the_routers_choice():
    cpu = load_profile("cpu")
    high = RouteDecision(target=cpu.reasoner.model_id, role="reasoner", reason="r", policy="p", score=0.99, threshold=0.5)
    assert Tiers(cpu).place(high, HealthPicture([])) is high
