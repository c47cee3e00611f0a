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


def test_the_llm_server_batches_its_streams_in_the_step_the_graph_replaces():
    from ray.serve.llm.deployment import LLMServer

    from serve.kernel.ray_private import LLM_SERVER_STREAM_BATCHING

    run_request = inspect.getsource(LLMServer._run_request)
    assert f"self.{LLM_SERVER_STREAM_BATCHING}(engine_stream)" in run_request, "LLMServer no longer batches there"
    assert list(inspect.signature(getattr(LLMServer, LLM_SERVER_STREAM_BATCHING)).parameters) == ["self", "generator"]
    assert callable(LLMServer._get_batch_interval_ms), "read by stream_batching_interval_ms"


def test_the_public_engine_and_server_methods_sleep_and_wake_use_are_there():
    from ray.serve.llm.deployment import LLMServer

    for name in ("start", "sleep", "wakeup", "check_health", "chat", "completions"):
        assert inspect.iscoroutinefunction(getattr(LLMServer, name)), name
    assert "engine_cls" in inspect.signature(LLMServer.__init__).parameters
    for name in ("sleep", "wakeup", "collective_rpc", "shutdown", "check_health"):
        assert inspect.iscoroutinefunction(getattr(VLLMEngine, name)), name


def test_the_engine_client_is_where_engine_client_reads_it(tmp_path):
    from ray.serve.llm import LLMConfig

    from serve.kernel.ray_private import engine_client

    engine = VLLMEngine(LLMConfig(model_loading_config={"model_id": "m", "model_source": str(tmp_path)}))
    assert engine_client(engine) is None, "VLLMEngine holds its AsyncLLM in _engine_client, None before start"
    assert "self._engine_client = self._start_async_llm_engine(" in inspect.getsource(VLLMEngine.start)
