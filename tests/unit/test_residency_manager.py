"""The residency manager with fake engines and no Ray: one wake serves every waiter, the
victim sleeps before the wake, busy models are kept, and failures are typed.

The fakes stand in for the LLM deployments' handles only (``engine_wake``,
``engine_sleep``, ``engine_footprint``); the integration module ``test_residency``
runs the same manager against real engines.
"""

from __future__ import annotations

import asyncio

import pytest

from deployments.residency.deployment import Residency
import deployments.residency.transitions as transitions_module
from serve.kernel.config import load_profile
from serve.kernel.errors import Conflict, Unavailable

SWAP = load_profile("cpu-swap")
EXTRACTOR, REASONER, HEAVY = (spec.model_id for spec in SWAP.models)


class _Method:
    def __init__(self, fn) -> None:
        self.remote = fn


class FakeEngine:
    """An LLM replica's engine lifecycle, with a log of what happened in what order."""

    def __init__(self, name: str, log: list, *, wake_s: float = 0.05, fail_wake: bool = False) -> None:
        self.name, self.log, self.wake_s, self.fail_wake = name, log, wake_s, fail_wake
        self.engine_wake = _Method(self._wake)
        self.engine_sleep = _Method(self._sleep)
        self.engine_footprint = _Method(self._footprint)
        self.engine_state = _Method(self._state)
        self.awake = False

    async def _state(self):
        return "awake" if self.awake else "asleep"

    async def _wake(self):
        self.log.append(("wake", self.name))
        await asyncio.sleep(self.wake_s)
        if self.fail_wake:
            raise RuntimeError("engine start failed: out of memory")
        self.awake = True
        return {"how": "start", "seconds": self.wake_s, "after": {"rss_gib": 2.4}}

    async def _sleep(self):
        self.log.append(("sleep", self.name))
        await asyncio.sleep(0.02)
        self.awake = False
        return {"mechanism": "stop", "seconds": 0.02, "before": {"rss_gib": 2.4}, "after": {"rss_gib": 0.01}}

    async def _footprint(self):
        return {"rss_gib": 2.4}


class _Metric:
    def inc(self, *a, **k): ...
    def set(self, *a, **k): ...
    def observe(self, *a, **k): ...


@pytest.fixture(autouse=True)
def no_ray_metrics(monkeypatch):
    monkeypatch.setattr(transitions_module, "replica_metric", lambda *a, **k: _Metric())


async def make(profile=SWAP, engines=None, **engine_options):
    log: list = []
    engines = engines or {spec.role: FakeEngine(spec.model_id, log, **engine_options.get(spec.role, {}))
                          for spec in profile.models}
    residency = Residency.__new__(Residency)
    await residency.__init__(profile, engines)
    return residency, log


def run(coro):
    return asyncio.run(coro)


async def states_of(residency: Residency) -> dict[str, str]:
    """Each model's state as the manager reports it."""
    return {row["model"]: row["state"] for row in await residency.states()}


def test_four_waiters_share_one_wake():
    async def scenario():
        residency, log = await make()
        waits = await asyncio.gather(*(residency.acquire(REASONER) for _ in range(4)))
        assert all(isinstance(w, float) and w > 0 for w in waits), waits
        assert log == [("wake", REASONER)]
        assert (await residency.states())[1]["in_flight"] == 4
        for _ in range(4):
            await residency.release(REASONER)
        assert await residency.acquire(REASONER) == 0.0, "awake: no wait"
    run(scenario())


def test_the_victim_is_asleep_before_the_wake_starts():
    async def scenario():
        residency, log = await make()
        await residency.acquire(REASONER)
        await residency.release(REASONER)
        await residency.acquire(HEAVY)
        assert log == [("wake", REASONER), ("sleep", REASONER), ("wake", HEAVY)]
        views = await states_of(residency)
        assert views == {EXTRACTOR: "awake", REASONER: "asleep", HEAVY: "awake"}
    run(scenario())


def test_a_busy_model_is_neither_evicted_nor_put_to_sleep_by_an_operator():
    async def scenario():
        residency, log = await make(quick_turns())
        await residency.acquire(REASONER)  # in flight
        heavy = asyncio.create_task(residency.acquire(HEAVY))
        await asyncio.sleep(0.3)
        assert not heavy.done(), "the heavy model waits its turn: the reasoner is busy"
        busy = await residency.sleep(REASONER)
        assert isinstance(busy, Conflict) and busy.code == "model_busy"
        assert log == [("wake", REASONER)]
        assert (await states_of(residency))[REASONER] == "awake"
        await residency.release(REASONER)
        assert isinstance(await heavy, float), "once the reasoner is done, the heavy model's turn comes"
        assert log == [("wake", REASONER), ("sleep", REASONER), ("wake", HEAVY)]
    run(scenario())


def quick_turns(min_awake_s: float = 0.2, wake_timeout_s: float = 30.0):
    return SWAP.model_copy(update={"residency": SWAP.residency.model_copy(
        update={"min_awake_s": min_awake_s, "wake_timeout_s": wake_timeout_s})})


def test_alternating_requests_for_two_models_that_cannot_both_wake_are_served_in_turns():
    async def scenario():
        residency, log = await make(quick_turns(min_awake_s=0.3))

        async def request(model: str, hold_s: float):
            waited = await residency.acquire(model)
            assert isinstance(waited, float), waited
            await asyncio.sleep(hold_s)  # the answer being generated
            await residency.release(model)

        tasks = []
        for i in range(20):  # alternating, a new request every 20 ms
            tasks.append(asyncio.create_task(request(REASONER if i % 2 == 0 else HEAVY, 0.1)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
        switches = [event for event in log if event[0] == "wake"]
        assert len(switches) <= 4, log
    run(scenario())


def test_a_turn_that_never_comes_is_a_503_in_the_wake_budget():
    async def scenario():
        residency, _ = await make(quick_turns(min_awake_s=0.0, wake_timeout_s=0.4))
        await residency.acquire(REASONER)  # held past the heavy model's budget
        late = await residency.acquire(HEAVY)
        assert isinstance(late, Unavailable) and late.code == "model_waking" and late.headers["Retry-After"]
        assert (await residency.states())[2]["waiting"] == 0, "a request that gave up waits no more"
    run(scenario())


def test_a_wake_that_outlasts_the_timeout_is_a_503_with_retry_after():
    async def scenario():
        slow = SWAP.model_copy(update={"residency": SWAP.residency.model_copy(update={"wake_timeout_s": 0.05})})
        residency, _ = await make(slow, reasoner={"wake_s": 0.5})
        late = await residency.acquire(REASONER)
        assert isinstance(late, Unavailable) and late.code == "model_waking" and late.headers["Retry-After"] == "5"
        operator = await residency.wake(REASONER)
        assert isinstance(operator, Unavailable) and operator.code == "model_waking", "an operator's wake too"
        await asyncio.sleep(0.6)
        assert (await states_of(residency))[REASONER] == "awake", \
            "the wake itself goes on for the next request"
    run(scenario())


def test_a_failed_wake_leaves_the_model_asleep_and_says_so():
    async def scenario():
        residency, _ = await make(reasoner={"fail_wake": True})
        failed = await residency.acquire(REASONER)
        assert isinstance(failed, Unavailable) and failed.code == "model_wake_failed"
        assert "out of memory" not in failed.message, "internal error text stays in the log"
        assert (await states_of(residency))[REASONER] == "asleep"
    run(scenario())


def test_a_restarted_manager_takes_the_engines_word_for_what_is_awake():
    async def scenario():
        first, log = await make()
        await first.acquire(HEAVY)
        await first.release(HEAVY)
        engines = {spec.role: first._handles[spec.model_id] for spec in SWAP.models}  # the same replicas
        restarted, _ = await make(engines=engines)
        await restarted._moves.reconcile()
        views = await states_of(restarted)
        assert views[HEAVY] == "awake", "otherwise the budget would count the heavy model's memory as free"
        await restarted.acquire(REASONER)
        assert ("sleep", HEAVY) in log, "so waking the reasoner evicts it"
    run(scenario())
