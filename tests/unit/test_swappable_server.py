"""The swappable LLM server over a fake engine: an on-demand model starts with no engine
and answers a typed "asleep", a wake starts and warms its engine, a ``stop`` sleep
stops it and drops it, and a level-2 wake reloads the weights before the KV cache.

The server is Ray Serve LLM's real ``LLMServer`` subclass; only the engine (injected as
``engine_cls``, as the graph injects its own) is a fake. The real engine's sleep and
wake run in tests/integration/test_residency.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.serve.llm import LLMConfig

from deployments.llm.builder import llm_config_dict
from deployments.llm.lifecycle import EngineLifecycle
from deployments.llm.streaming import first_chunks_at_once
from deployments.llm.swappable import SwappableLLMServer
from serve.kernel.config import load_profile
from serve.kernel.errors import ModelAsleep
from serve.kernel.ray_private import LLM_SERVER_STREAM_BATCHING

EVENTS: list[str] = []


class FakeEngine:
    """The engine interface the server uses: start, stop, sleep, wakeup, reload, warm-up."""

    def __init__(self, llm_config: Any) -> None:
        self.llm_config = llm_config

    async def start(self) -> None:
        EVENTS.append("start")

    async def stop(self) -> None:
        EVENTS.append("stop")

    async def sleep(self, **kwargs: Any) -> None:
        EVENTS.append(f"sleep{kwargs}")

    async def wakeup(self, **kwargs: Any) -> None:
        EVENTS.append(f"wakeup{kwargs}")

    async def reload_weights(self) -> None:
        EVENTS.append("reload_weights")

    async def warm_up(self) -> None:
        EVENTS.append("warm_up")

    async def check_health(self) -> None:
        EVENTS.append("check_health")


def config(lifecycle: EngineLifecycle, tmp_path) -> LLMConfig:
    fields = llm_config_dict(load_profile("cpu-swap").models[-1], device="cpu", model_path=str(tmp_path))
    fields["experimental_configs"] = lifecycle.into(fields.get("experimental_configs") or {})
    return LLMConfig(**fields)


async def construct(llm_config: LLMConfig) -> SwappableLLMServer:
    """Build the server as Serve's replica does: ``__new__``, then its async ``__init__``."""
    server = SwappableLLMServer.__new__(SwappableLLMServer)
    await server.__init__(llm_config, engine_cls=FakeEngine)
    return server


@pytest.fixture(autouse=True)
def fresh_events():
    EVENTS.clear()


def test_an_on_demand_model_sleeps_by_stopping_and_wakes_by_starting(tmp_path):
    async def scenario():
        server = await construct(config(EngineLifecycle(start_awake=False, mechanism="stop"), tmp_path))
        assert server.engine is None and await server.engine_state() == "asleep" and EVENTS == []
        asleep = [item async for item in await server.chat(None)]
        assert len(asleep) == 1 and isinstance(asleep[0], ModelAsleep)
        await server.check_health()
        assert EVENTS == [], "asleep is not down: no health check reaches a missing engine"

        woken = await server.engine_wake()
        assert woken["how"] == "start" and EVENTS == ["start", "warm_up"]
        assert await server.engine_state() == "awake" and isinstance(server.engine, FakeEngine)
        assert (await server.engine_wake())["how"] == "none", "a wake of an awake engine does nothing"

        slept = await server.engine_sleep()
        assert slept["mechanism"] == "stop" and EVENTS[-1] == "stop" and server.engine is None
        assert (await server.engine_wake())["how"] == "start"
    asyncio.run(scenario())


def test_a_level2_sleep_keeps_the_engine_and_reloads_its_weights_on_wake(tmp_path):
    async def scenario():
        server = await construct(config(EngineLifecycle(start_awake=True, mechanism="level2"), tmp_path))
        assert EVENTS == ["start"] and await server.engine_state() == "awake"
        await server.engine_sleep()
        assert EVENTS[-1] == "sleep{'level': 2}" and server.engine is not None
        assert (await server.engine_wake())["how"] == "wakeup+reload"
        assert EVENTS[-4:] == ["wakeup{'tags': ['weights']}", "reload_weights", "wakeup{'tags': ['kv_cache']}", "warm_up"]
    asyncio.run(scenario())


def test_a_config_without_a_lifecycle_is_an_always_awake_engine():
    assert EngineLifecycle.of(LLMConfig(model_loading_config={"model_id": "m", "model_source": "/m"})) == EngineLifecycle()


def test_the_server_streams_the_first_token_at_once():
    replaced = getattr(SwappableLLMServer, LLM_SERVER_STREAM_BATCHING)
    assert replaced is SwappableLLMServer.first_token_at_once
    assert first_chunks_at_once.__module__ == "deployments.llm.streaming"
