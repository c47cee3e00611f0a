"""The ingress's bounded wait for the router: a stalled router never stalls ``auto``."""

from __future__ import annotations

import asyncio

from deployments.router.decision import RouteDecision
from deployments.router.features import RouteInput
from serve.config import load_profile
from serve.router_client import decide_in_time

PROFILE = load_profile("cpu")


class _Call:
    def __init__(self, delay_s: float, answer: RouteDecision) -> None:
        self._delay_s, self._answer = delay_s, answer

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> RouteDecision:
        await asyncio.sleep(self._delay_s)
        return self._answer


class FakeRouter:
    """Stands in for the Router handle: answers ``decide`` after a delay."""

    def __init__(self, delay_s: float) -> None:
        answer = RouteDecision(target=PROFILE.reasoner.model_id, role="reasoner", reason="hybrid: score 0.9 >= 0.50",
                               policy="hybrid", score=0.9, threshold=0.5)
        self.decide = type("Method", (), {"remote": lambda _self, _input: _Call(delay_s, answer)})()


def test_a_prompt_router_decides():
    decision = asyncio.run(decide_in_time(FakeRouter(0.0), RouteInput(text="prove it"), profile=PROFILE, timeout_s=1.0))
    assert decision.target == PROFILE.reasoner.model_id and decision.reason.startswith("hybrid")


def test_a_stalled_router_sends_the_request_to_the_extractor_and_says_why():
    decision = asyncio.run(decide_in_time(FakeRouter(30.0), RouteInput(text="prove it"), profile=PROFILE, timeout_s=0.05))
    assert decision.target == PROFILE.extractor.model_id and decision.role == "extractor"
    assert decision.reason.startswith("router timeout") and decision.features == {"router": "timeout"}
    assert not decision.pinned


def test_the_ingress_decides_in_its_own_process_as_the_router_deployment_would():
    """The in-process router embeds with the profile's real embedding model and takes
    the same decisions: a proof to the reasoner, a lookup to the extractor."""
    from deployments.llm.sources import resolve_source
    from serve.router_client import InProcessRouter
    from serve.settings import load_settings

    assert PROFILE.router.embeds_in_process(PROFILE.embedder), "the cpu profile's embedder is on the CPU"
    router = InProcessRouter(PROFILE, resolve_source(PROFILE.embedder.source, cache_dir=load_settings().cache_dir))

    async def both() -> tuple[RouteDecision, RouteDecision]:
        await router.warm_up()
        proof = RouteInput(text="Prove step by step that the square root of 2 is irrational, then derive a general rule.")
        lookup = RouteInput(text="What is the capital of France?")
        return (await decide_in_time(router, proof, profile=PROFILE, timeout_s=30),
                await decide_in_time(router, lookup, profile=PROFILE, timeout_s=30))

    proof, lookup = asyncio.run(both())
    assert (proof.role, lookup.role) == ("reasoner", "extractor"), (proof.reason, lookup.reason)
    assert proof.policy == "hybrid" and "semantic_score" in proof.features
