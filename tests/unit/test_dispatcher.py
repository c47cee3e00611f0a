"""The dispatcher with fake handles and no Ray: pinning, auto routing, capacity and
thermal degrade, each fallback outcome, and a started stream never replayed.

The fakes (``tests/support/fakes.py``, shared with the services' tests) stand in for
deployment handles only; the integration suite runs the same dispatcher against the
real graph.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import pytest
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from serve.kernel.config import load_profile
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import BadRequest, NotFound, RateLimited, Unavailable
from serve.kernel.health import HealthCache, HealthPicture
from serve.kernel.routing import RouteDecision, RouteInput
from serve.kernel.settings import Settings
from tests.support.fakes import FakeLlm, FakeRouter
from tests.support.models import EXTRACTOR, PROFILE, REASONER

_CPU = load_profile(PROFILE)
#: The cpu profile with `auto` allowed onto its random-weight reasoner: these tests are about
#: routing, capacity and fallback mechanics between two models, whatever their weights.
PROFILE_ = _CPU.model_copy(update={"router": _CPU.router.model_copy(update={"allow_random_weights": True})})


def make(extractor: FakeLlm = None, reasoner: FakeLlm = None, router: FakeRouter = None, *,
         thermal: str = "normal", settings: Settings = None) -> tuple[Dispatcher, HealthCache]:
    extractor = extractor or FakeLlm(EXTRACTOR)
    reasoner = reasoner or FakeLlm(REASONER)
    router = router or FakeRouter()
    health = HealthCache({"extractor": extractor, "reasoner": reasoner, "router": router})
    health.thermal = {"level": thermal, "temperature_c": 91.0 if thermal != "normal" else None}
    health.watch = lambda: None  # the test decides when health is refreshed
    dispatcher = Dispatcher(PROFILE_, {EXTRACTOR: extractor, REASONER: reasoner}, router, health,
                            settings or Settings(router_timeout_s=0.2))
    return dispatcher, health


def chat(stream: bool = False, **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="auto", messages=[{"role": "user", "content": "hello"}], stream=stream, **extra)


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------ resolve
def test_a_pin_wins_over_the_router():
    dispatcher, _ = make(router=FakeRouter("reasoner"))
    by_header = run(dispatcher.resolve("auto", RouteInput(text="x"), pin="extractor"))
    assert by_header.target == EXTRACTOR and by_header.pinned and by_header.reason == "pinned: x-route header"
    by_model = run(dispatcher.resolve(REASONER, RouteInput(text="x")))
    assert by_model.target == REASONER and by_model.reason == "pinned: model named in request"
    with pytest.raises(BadRequest):
        run(dispatcher.resolve("auto", RouteInput(text="x"), pin="gpt-9"))
    with pytest.raises(NotFound):
        run(dispatcher.resolve("gpt-9", RouteInput(text="x")))
    with pytest.raises(BadRequest):
        run(dispatcher.resolve(PROFILE_.embedder.model_id, RouteInput(text="x")))


def test_auto_asks_the_router_and_a_stalled_router_means_the_extractor():
    dispatcher, _ = make(router=FakeRouter("reasoner"))
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    assert decision.target == REASONER and not decision.pinned
    assert decision.features["thermal_level"] == "normal"
    stalled, _ = make(router=FakeRouter("reasoner", delay_s=60))
    decision = run(stalled.resolve("auto", RouteInput(text="prove it")))
    assert decision.target == EXTRACTOR and decision.reason.startswith("router timeout")


def test_on_the_cpu_profile_auto_and_its_fallbacks_keep_to_the_real_model():
    llms = {EXTRACTOR: FakeLlm(EXTRACTOR, fail=RayActorError()), REASONER: FakeLlm(REASONER)}
    dispatcher = Dispatcher(_CPU, llms, FakeRouter("reasoner"), HealthPicture(["extractor", "reasoner"]),
                            Settings(router_timeout_s=0.5))
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    assert decision.target == EXTRACTOR and decision.reason.startswith("reasoner has random weights")
    with pytest.raises(RayActorError):
        run(dispatcher.dispatch(chat(), "chat", decision))
    assert llms[REASONER].bodies == [], "a random-weight model is no fallback for auto traffic"
    named = run(dispatcher.resolve(REASONER, RouteInput(text="prove it")))
    assert run(dispatcher.dispatch(chat(), "chat", named)).reply["model"] == REASONER, "naming it still works"
    asked = run(dispatcher.resolve("auto", RouteInput(text="prove it"), allow_random_weights=True))
    assert asked.target == REASONER and asked.random_weights_allowed, "x-route-random-weights: allow"
    llms[REASONER].fail = RayActorError()
    llms[EXTRACTOR].fail = None
    fell_back = run(dispatcher.dispatch(chat(), "chat", asked))
    assert fell_back.hops == (f"{REASONER}=replica_died", f"{EXTRACTOR}=ok")


def test_a_busy_reasoner_or_a_hot_gpu_keeps_auto_on_the_extractor():
    dispatcher, _ = make(router=FakeRouter("reasoner"))
    dispatcher.in_flight[REASONER] = PROFILE_.router.reasoner_max_in_flight
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    assert decision.target == EXTRACTOR and decision.reason.startswith("capacity: reasoner busy")
    hot, _ = make(router=FakeRouter("reasoner"), thermal="soft")
    decision = run(hot.resolve("auto", RouteInput(text="prove it")))
    assert decision.target == EXTRACTOR and decision.reason.startswith("thermal: GPU at 91°C")
    assert "router wanted the reasoner" in decision.reason


def test_a_hot_gpu_sheds_llm_requests_with_retry_after():
    dispatcher, _ = make(thermal="hard")
    with pytest.raises(RateLimited) as shed:
        dispatcher.admit(llm=True)
    assert shed.value.code == "gpu_overheated" and "Retry-After" in shed.value.headers


# ------------------------------------------------------------------ forward
def test_the_routed_model_answers_with_its_limits_and_the_input_is_left_alone():
    extractor = FakeLlm(EXTRACTOR)
    dispatcher, _ = make(extractor=extractor)
    original = chat()
    decision = run(dispatcher.resolve("auto", RouteInput(text="hi")))
    frozen = decision.model_copy(deep=True)
    dispatched = run(dispatcher.dispatch(original, "chat", decision))
    assert dispatched.reply["choices"][0]["message"]["content"] == f"from {EXTRACTOR}"
    assert dispatched.hops == (f"{EXTRACTOR}=ok",) and dispatched.decision == decision
    sent = extractor.bodies[0]
    assert sent.model == EXTRACTOR and sent.max_tokens == PROFILE_.extractor.max_tokens_limit
    assert original.model == "auto" and original.max_tokens is None and decision == frozen
    assert dispatcher.in_flight[EXTRACTOR] == 0


@pytest.mark.parametrize("failure, outcome", [
    (DeploymentUnavailableError("Reasoner"), "unavailable"),
    (BackPressureError(num_queued_requests=9, max_queued_requests=8), "overloaded"),
    (RayActorError(), "replica_died"),
])
def test_auto_falls_back_to_the_other_model_before_the_first_byte(failure, outcome):
    dispatcher, _ = make(reasoner=FakeLlm(REASONER, fail=failure), router=FakeRouter("reasoner"))
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    dispatched = run(dispatcher.dispatch(chat(), "chat", decision))
    assert dispatched.hops == (f"{REASONER}={outcome}", f"{EXTRACTOR}=ok")
    assert dispatched.decision.target == EXTRACTOR and dispatched.decision.role == "extractor"
    assert dispatched.decision.reason.startswith(f"fallback after {REASONER}={outcome}")
    assert decision.target == REASONER, "the caller's decision is not changed"
    assert dispatcher.in_flight == {REASONER: 0, EXTRACTOR: 0}


def test_a_deployment_known_to_be_down_is_skipped_without_a_call():
    reasoner = FakeLlm(REASONER, fail=DeploymentUnavailableError("Reasoner"))
    dispatcher, health = make(reasoner=reasoner, router=FakeRouter("reasoner"))
    run(health.refresh())
    assert health.statuses()["reasoner"] == "down"
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    dispatched = run(dispatcher.dispatch(chat(), "chat", decision))
    assert dispatched.hops == (f"{REASONER}=unavailable", f"{EXTRACTOR}=ok") and reasoner.bodies == []


def test_a_model_that_stays_down_is_refused_with_retry_after_instead_of_held():
    """Its node is gone: Serve would hold the request until a replica exists (never)."""
    reasoner = FakeLlm(REASONER, delay_s=3600)
    dispatcher, health = make(reasoner=reasoner, settings=Settings(router_timeout_s=0.2, down_model_wait_s=0.3))
    health._healthy["reasoner"] = False
    health.without_replicas = frozenset({"reasoner"})

    async def pinned():
        return await dispatcher.dispatch(chat(), "chat", dispatcher.pinned(REASONER, "test"))

    with pytest.raises(Unavailable) as refused:
        run(asyncio.wait_for(pinned(), 30))
    assert refused.value.code == "model_unavailable" and refused.value.headers == {"Retry-After": "5"}
    assert reasoner.cancelled == 1, "the held request is withdrawn"
    assert dispatcher.in_flight == {REASONER: 0}


def test_a_model_back_within_the_wait_or_merely_busy_is_served():
    reasoner = FakeLlm(REASONER, delay_s=0.6)
    dispatcher, health = make(reasoner=reasoner, settings=Settings(router_timeout_s=0.2, down_model_wait_s=0.4))

    async def back_soon():
        health._healthy["reasoner"], health.without_replicas = False, frozenset({"reasoner"})
        asyncio.get_running_loop().call_later(0.2, setattr, health, "without_replicas", frozenset())
        return await dispatcher.dispatch(chat(), "chat", dispatcher.pinned(REASONER, "test"))

    assert run(back_soon()).hops == (f"{REASONER}=ok",)
    # Its health check failing (a full queue refuses it too) while Serve runs a replica:
    # busy, not gone, so the request waits for its answer.
    health._healthy["reasoner"], health.without_replicas = False, frozenset()
    assert run(dispatcher.dispatch(chat(), "chat", dispatcher.pinned(REASONER, "test"))).hops == (f"{REASONER}=ok",)
    assert reasoner.cancelled == 0


def test_a_deployment_with_no_replica_running_is_told_apart_from_a_busy_one(monkeypatch):
    from serve.kernel import health as health_module

    extractor, reasoner = FakeLlm(EXTRACTOR), FakeLlm(REASONER, fail=DeploymentUnavailableError("Reasoner"))
    extractor.deployment_name, reasoner.deployment_name = "Extractor", "Reasoner"
    health = HealthCache({"extractor": extractor, "reasoner": reasoner})
    asked = []

    def counts(running):
        return lambda: asked.append(1) or running

    monkeypatch.setattr(health_module, "running_replicas", counts({"Extractor": 1, "Reasoner": 0}))
    run(health.refresh())
    assert health.has_no_replica("reasoner") and not health.has_no_replica("extractor")
    monkeypatch.setattr(health_module, "running_replicas", counts({"Extractor": 1, "Reasoner": 1}))
    run(health.refresh())
    assert not health.has_no_replica("reasoner"), "down to its probe but running: busy, not gone"
    reasoner.fail = None
    asked.clear()
    run(health.refresh())
    assert health.without_replicas == frozenset() and asked == [], "Serve is asked only while something is down"


def test_a_picture_sent_by_the_ingress_steers_a_dispatcher_that_probes_nothing():
    """The Extraction replicas' dispatcher: no loop, the ingress's picture per document."""
    ingress_health = HealthCache({"extractor": FakeLlm(EXTRACTOR), "reasoner": FakeLlm(REASONER, fail=RayActorError()),
                                  "router": FakeRouter()})
    run(ingress_health.refresh())
    ingress_health.thermal = {"level": "soft", "temperature_c": 85.0}
    reasoner = FakeLlm(REASONER)
    picture = HealthPicture(["extractor", "reasoner"])
    dispatcher = Dispatcher(PROFILE_, {EXTRACTOR: FakeLlm(EXTRACTOR), REASONER: reasoner}, FakeRouter("reasoner"),
                            picture, Settings(router_timeout_s=0.2))
    assert picture.statuses() == {"extractor": "unknown", "reasoner": "unknown"}
    picture.update(ingress_health.snapshot())
    assert picture.statuses() == {"extractor": "ok", "reasoner": "down"}, "names it does not track are left out"
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    assert decision.target == EXTRACTOR and decision.reason.startswith("thermal: GPU at 85°C")
    dispatched = run(dispatcher.dispatch(chat(), "chat", decision.model_copy(update={"target": REASONER, "role": "reasoner"})))
    assert dispatched.hops == (f"{REASONER}=unavailable", f"{EXTRACTOR}=ok") and reasoner.bodies == []
    picture.update(None)
    assert picture.statuses()["reasoner"] == "down", "a request without a picture keeps the last one"


def test_pinned_requests_never_fall_back():
    dispatcher, _ = make(reasoner=FakeLlm(REASONER, fail=DeploymentUnavailableError("Reasoner")))
    with pytest.raises(Unavailable):
        run(dispatcher.dispatch(chat(), "chat", dispatcher.pinned(REASONER, "test")))


def test_thermal_shedding_is_not_a_reason_to_try_another_model():
    dispatcher, _ = make(router=FakeRouter("reasoner"), thermal="hard")
    decision = RouteDecision(target=REASONER, role="reasoner", reason="r", policy="p", score=1, threshold=0.5, features={})
    with pytest.raises(RateLimited):
        run(dispatcher.dispatch(chat(), "chat", decision))


def test_a_started_stream_is_never_replayed():
    reasoner = FakeLlm(REASONER, stream_fail_after=2)
    extractor = FakeLlm(EXTRACTOR)
    dispatcher, _ = make(extractor=extractor, reasoner=reasoner, router=FakeRouter("reasoner"))
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))

    async def consume():
        dispatched = await dispatcher.dispatch(chat(stream=True), "chat", decision)
        chunks = []
        with pytest.raises(RayActorError):
            async for chunk in dispatched.stream:
                chunks.append(chunk)
        return dispatched, chunks

    dispatched, chunks = run(consume())
    assert dispatched.hops == (f"{REASONER}=ok",) and len(chunks) == 2
    assert all(REASONER in c for c in chunks) and extractor.bodies == [], "no other model saw the request"
    assert dispatcher.in_flight[REASONER] == 0, "the count ends with the stream"


def test_a_stream_counts_as_in_flight_until_its_last_chunk():
    dispatcher, _ = make()

    async def consume():
        dispatched = await dispatcher.dispatch(chat(stream=True), "chat", dispatcher.pinned(EXTRACTOR, "test"))
        first = await dispatched.stream.__anext__()
        during = dispatcher.in_flight[EXTRACTOR]
        rest = [chunk async for chunk in dispatched.stream]
        return first, during, rest

    first, during, rest = run(consume())
    assert during == 1 and dispatcher.in_flight[EXTRACTOR] == 0
    assert first.startswith("data: ") and rest[-1] == "data: [DONE]\n\n"


def test_every_local_model_down_ends_with_unavailable():
    down = DeploymentUnavailableError("x")
    dispatcher, _ = make(extractor=FakeLlm(EXTRACTOR, fail=down), reasoner=FakeLlm(REASONER, fail=down))
    decision = run(dispatcher.resolve("auto", RouteInput(text="hi")))
    with pytest.raises(Unavailable):
        run(dispatcher.dispatch(chat(), "chat", decision))


def test_an_engine_error_before_the_first_chunk_is_the_clients_error_not_a_fallback():
    from serve.kernel.ray_private import ErrorResponse, OpenAIHTTPException

    class Refusing(FakeLlm):
        async def _answer(self, body):
            yield ErrorResponse.model_validate({"error": {"message": "max_tokens must be at least 1", "type": "BadRequestError", "code": 400}})

    extractor = FakeLlm(EXTRACTOR)
    dispatcher, _ = make(extractor=extractor, reasoner=Refusing(REASONER), router=FakeRouter("reasoner"))
    decision = run(dispatcher.resolve("auto", RouteInput(text="prove it")))
    with pytest.raises(OpenAIHTTPException) as refused:
        run(dispatcher.dispatch(chat(stream=True), "chat", decision))
    assert refused.value.status_code == 400 and extractor.bodies == []
    assert dispatcher.in_flight[REASONER] == 0
