"""The private Ray Serve LLM surface the project leans on: fails loudly when an upgrade
moves it (serve/kernel/ray_private.py is the one place that names it)."""

from __future__ import annotations

import inspect

from serve.kernel.ray_private import VLLM_ENGINE_START_STEPS, CallbackBase, VLLMEngine


def test_vllm_engine_start_still_runs_the_steps_the_off_loop_engine_takes_over_in_order():
    source = inspect.getsource(VLLMEngine.start)
    positions = [source.find(step) for step in VLLM_ENGINE_START_STEPS]
    assert -1 not in positions, f"VLLMEngine.start no longer calls {VLLM_ENGINE_START_STEPS}: {positions}"
    assert positions == sorted(positions), "the awaited hook must come before the blocking steps"
    assert "await self._start_async_llm_engine" not in source, "the client is built by a plain call"
    for step in VLLM_ENGINE_START_STEPS[1:]:
        assert callable(getattr(VLLMEngine, step)), step


def test_the_start_callback_context_carries_custom_data():
    assert isinstance(CallbackBase(llm_config=None).ctx.custom_data, dict), "where the engine leaves itself"
