"""The engine's blocking start steps run off the replica's event loop.

The two steps are replaced by ones that block their thread for a second each (what
preparing the config and loading the model do for 16-37 s); the event loop must keep
ticking meanwhile, and ``start`` must take what was built off the loop. The real engine
start is exercised by tests/integration/test_residency.py (a slowed wake the replica
survives).
"""

from __future__ import annotations

import asyncio
import threading
import time

from ray.serve.llm import LLMConfig

from deployments.llm.builder import llm_config_dict
from deployments.llm.callbacks import EngineStartCallback
from deployments.llm.engine import OffLoopStartEngine
from serve.kernel.config import load_profile
from serve.kernel.ray_private import VLLMEngine
from tests.support.loop import LoopTicks

BLOCK_S = 0.5


def test_the_blocking_steps_run_in_a_thread_while_the_loop_ticks(monkeypatch, tmp_path):
    threads: dict[str, str] = {}

    def prepare(self, ctx):
        threads["prepare"] = threading.current_thread().name
        time.sleep(BLOCK_S)
        return ("engine-args", "frontend-args", "engine-config")

    def build(self, engine_args, engine_config, placement_group):
        threads["build"] = threading.current_thread().name
        time.sleep(BLOCK_S)
        return ("client-for", engine_args, engine_config)

    async def rest_of_start(self):
        # What VLLMEngine.start does around the hook, reduced to the calls this engine changes.
        callback = self.llm_config.get_or_create_callback()
        await callback.run_callback("on_after_node_init")
        args, _, config = self._prepare_engine_config(callback.ctx)
        self.built_client = self._start_async_llm_engine(args, config, None)

    monkeypatch.setattr(VLLMEngine, "_prepare_engine_config", prepare)
    monkeypatch.setattr(VLLMEngine, "_start_async_llm_engine", build)
    monkeypatch.setattr(VLLMEngine, "start", rest_of_start)
    spec = load_profile("cpu-tiny").extractor
    config = LLMConfig(**llm_config_dict(spec, device="cpu", model_path=str(tmp_path)))
    # The real callback, without the placement group (and the Ray cluster) Ray would make for it.
    callback = EngineStartCallback(llm_config=config, local_weights=True)
    monkeypatch.setattr(LLMConfig, "get_or_create_callback", lambda self: callback)

    async def scenario():
        engine = OffLoopStartEngine(config)
        async with LoopTicks() as loop:
            started = time.perf_counter()
            await engine.start()
            elapsed = time.perf_counter() - started
        return engine, loop.ticks, elapsed

    engine, ticks, elapsed = asyncio.run(scenario())
    assert engine.built_client == ("client-for", "engine-args", "engine-config"), "start took what the thread built"
    main = threading.main_thread().name
    assert threads["prepare"] != main and threads["build"] != main
    assert elapsed >= 2 * BLOCK_S
    # A loop blocked for 2 x BLOCK_S would have ticked once or twice; a free one ticks all along
    # (every 20 ms: 50 times; 10 leaves room for a slow machine).
    assert ticks >= 10, (ticks, elapsed)
    assert engine._built is None and engine._prepared is None, "nothing is kept for the next start"
