"""The ingress's bounded wait for the router: a stalled router never stalls ``auto``."""

from __future__ import annotations

import asyncio

from serve.kernel.config import load_profile
from serve.kernel.router_client import decide_in_time
from serve.kernel.routing import RouteDecision, RouteInput
from tests.support.fakes import FakeRouter

PROFILE = load_profile("cpu")


def test_a_prompt_router_decides():
    decision = asyncio.run(decide_in_time(FakeRouter("reasoner", delay_s=0.0, reasoner=PROFILE.reasoner.model_id, policy="hybrid"), RouteInput(text="prove it"), profile=PROFILE, timeout_s=1.0))
    assert decision.target == PROFILE.reasoner.model_id and decision.reason.startswith("hybrid")


def test_a_stalled_router_sends_the_request_to_the_extractor_and_says_why():
    decision = asyncio.run(decide_in_time(FakeRouter("reasoner", delay_s=30.0, reasoner=PROFILE.reasoner.model_id), RouteInput(text="prove it"), profile=PROFILE, timeout_s=0.05))
    assert decision.target == PROFILE.extractor.model_id and decision.role == "extractor"
    assert decision.reason.startswith("router timeout") and decision.features == {"router": "timeout"}
    assert not decision.pinned


def test_the_ingress_decides_in_its_own_process_as_the_router_deployment_would():
    """The in-process router embeds with the profile's real embedding model and takes
    the same decisions: a proof to the reasoner, a lookup to the extractor."""
    from serve.kernel.sources import resolve_source
    from deployments.router.in_process import InProcessRouter
    from serve.kernel.settings import load_settings

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
