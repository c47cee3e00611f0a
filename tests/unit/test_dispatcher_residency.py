"""The dispatcher over an on-demand model: a lease around the whole answer, the wait
reported, a refused wake falls back (``auto`` only), and a fallback never wakes a model."""

from __future__ import annotations

import asyncio

import pytest
from ray.serve.exceptions import BackPressureError

from serve.kernel.config import load_profile
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import ModelAsleep, RateLimited, Unavailable
from serve.kernel.health import HealthPicture
from serve.kernel.llm_calls import BURST_RETRIES_S
from serve.kernel.routing import RouteInput
from serve.kernel.settings import Settings
from tests.support.fakes import FakeLlm, FakeResidency, FakeRouter
from tests.unit.test_dispatcher import chat

SWAP = load_profile("cpu-swap")
EXTRACTOR, REASONER, HEAVY = (spec.model_id for spec in SWAP.models)


def make(residency: FakeResidency, score: float = 0.97, heavy: FakeLlm = None):
    llms = {model: FakeLlm(model) for model in (EXTRACTOR, REASONER, HEAVY)}
    if heavy is not None:
        llms[HEAVY] = heavy
    health = HealthPicture(["extractor", "reasoner", "heavy"])
    dispatcher = Dispatcher(SWAP, llms, FakeRouter("reasoner", score=score, extractor=EXTRACTOR, reasoner=REASONER), health, Settings(router_timeout_s=0.5), residency)
    return dispatcher, llms


async def drain(dispatched, residency: FakeResidency) -> None:
    async for _ in dispatched.stream:
        pass
    for _ in range(100):  # the release runs in a task of its own
        if residency.calls[-1][0] == "release":
            return
        await asyncio.sleep(0.01)


def test_an_on_demand_model_is_leased_for_the_whole_stream_and_the_wait_reported():
    async def scenario():
        residency = FakeResidency()
        dispatcher, _ = make(residency)
        decision = await dispatcher.resolve("auto", RouteInput(text="prove"))
        assert decision.target == HEAVY
        dispatched = await dispatcher.dispatch(chat(stream=True), "chat", decision)
        assert dispatched.wake_ms == 1234.5 and residency.calls == [("acquire", HEAVY)], "held while streaming"
        await drain(dispatched, residency)
        assert residency.calls == [("acquire", HEAVY), ("release", HEAVY)]
    asyncio.run(scenario())


def test_a_resident_model_never_calls_the_manager():
    async def scenario():
        residency = FakeResidency()
        dispatcher, _ = make(residency)
        decision = await dispatcher.resolve(EXTRACTOR, RouteInput(text="hi"))
        dispatched = await dispatcher.dispatch(chat(), "chat", decision)
        assert dispatched.wake_ms == 0 and residency.calls == []
    asyncio.run(scenario())


def test_a_refused_wake_sends_auto_traffic_to_resident_models_only():
    async def scenario():
        residency = FakeResidency(refuse=True)
        dispatcher, llms = make(residency)
        decision = await dispatcher.resolve("auto", RouteInput(text="prove"))
        dispatched = await dispatcher.dispatch(chat(), "chat", decision)
        assert dispatched.hops == (f"{HEAVY}=unavailable", f"{EXTRACTOR}=ok")
        assert llms[REASONER].bodies == [], "the sleeping reasoner is not woken as a fallback"
        assert residency.calls == [("acquire", HEAVY)], "a refused lease is not released"
        pinned = await dispatcher.resolve(HEAVY, RouteInput(text="prove"))
        with pytest.raises(Unavailable) as refused:
            await dispatcher.dispatch(chat(), "chat", pinned)
        assert refused.value.code == "model_cannot_fit" and refused.value.headers["Retry-After"] == "5"
    asyncio.run(scenario())


class AsleepOnceLlm(FakeLlm):
    """A replica that Serve replaced: its engine is not running until the manager wakes it."""

    def __init__(self, model: str, *, times: int = 1) -> None:
        super().__init__(model)
        self.asleep_answers = times

    async def _answer(self, body):
        if self.asleep_answers:
            self.asleep_answers -= 1
            yield ModelAsleep.of(self.model)
            return
        async for chunk in super()._answer(body):
            yield chunk


def test_a_replica_without_its_engine_is_woken_and_asked_again_never_a_500():
    async def scenario():
        residency = FakeResidency()
        dispatcher, llms = make(residency, heavy=AsleepOnceLlm(HEAVY))
        pinned = await dispatcher.resolve(HEAVY, RouteInput(text="hi"))
        dispatched = await dispatcher.dispatch(chat(), "chat", pinned)
        assert dispatched.reply["model"] == HEAVY and len(llms[HEAVY].bodies) == 2
        for _ in range(100):  # releases run in tasks of their own
            if residency.calls.count(("release", HEAVY)) == 2:
                break
            await asyncio.sleep(0.01)
        leases = [call for call in residency.calls if call[0] != "release"]
        assert leases == [("acquire", HEAVY), ("found_asleep", HEAVY), ("acquire", HEAVY)]
        assert residency.calls.count(("release", HEAVY)) == 2, "every lease is given back"
    asyncio.run(scenario())


def test_an_engine_that_stays_asleep_is_a_503_with_retry_after():
    async def scenario():
        residency = FakeResidency()
        dispatcher, llms = make(residency, heavy=AsleepOnceLlm(HEAVY, times=2))
        pinned = await dispatcher.resolve(HEAVY, RouteInput(text="hi"))
        with pytest.raises(ModelAsleep) as asleep:
            await dispatcher.dispatch(chat(), "chat", pinned)
        assert asleep.value.status_code == 503 and asleep.value.code == "model_asleep"
        assert asleep.value.headers["Retry-After"]
    asyncio.run(scenario())


def test_model_asleep_crosses_a_pickle_intact():
    import pickle

    copy = pickle.loads(pickle.dumps(ModelAsleep.of("m", retry_after_s=7)))
    assert (type(copy), copy.code, copy.status_code, copy.headers) == (ModelAsleep, "model_asleep", 503, {"Retry-After": "7"})


class RefusingLlm(FakeLlm):
    """A handle that refuses the first ``times`` calls for load, as Serve's router does
    when a burst outruns the requests it has placed."""

    def __init__(self, model: str, *, times: int) -> None:
        super().__init__(model)
        self.refusals = times

    async def _answer(self, body):
        if self.refusals:
            self.refusals -= 1
            raise BackPressureError(num_queued_requests=8, max_queued_requests=8)
        async for chunk in super()._answer(body):
            yield chunk


@pytest.mark.parametrize("waited_ms, refusals, answered", [
    (1234.5, 2, True),     # released with the others that waited: tries again on its lease
    (1234.5, 99, False),   # really overloaded: the 429 stands after a few tries
    (0.0, 1, False),       # awake all along: an ordinary 429, no second try
])
def test_a_request_that_waited_for_its_model_rides_out_the_release_burst(waited_ms, refusals, answered):
    async def scenario():
        residency = FakeResidency(waited_ms=waited_ms)
        dispatcher, llms = make(residency, heavy=RefusingLlm(HEAVY, times=refusals))
        pinned = await dispatcher.resolve(HEAVY, RouteInput(text="hi"))
        if answered:
            dispatched = await dispatcher.dispatch(chat(), "chat", pinned)
            assert dispatched.reply["model"] == HEAVY and len(llms[HEAVY].bodies) == refusals + 1
        else:
            with pytest.raises(RateLimited) as refused:
                await dispatcher.dispatch(chat(), "chat", pinned)
            assert refused.value.code == "overloaded"
            assert len(llms[HEAVY].bodies) == (1 if not waited_ms else 1 + len(BURST_RETRIES_S))
        for _ in range(100):  # the lease is given back either way (in a task of its own)
            if ("release", HEAVY) in residency.calls:
                break
            await asyncio.sleep(0.01)
        assert residency.calls.count(("acquire", HEAVY)) == 1 and residency.calls.count(("release", HEAVY)) == 1
    asyncio.run(scenario())
