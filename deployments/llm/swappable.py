"""An LLMServer whose engine can be put to sleep and woken while the replica lives.

Ray Serve LLM's ``LLMServer`` starts its vLLM engine in the constructor and keeps it for
the replica's life. The residency manager (``deployments/residency``) needs more: a model
``on_demand`` starts with no engine, and is later put to sleep and woken as traffic and
the memory budget require. Three mechanisms, chosen per model in the profile:

* ``level1``: vLLM sleep level 1, weights to host RAM and the KV cache dropped; the
  fastest wake (GPU only: vLLM ignores sleep on CPU);
* ``level2``: vLLM sleep level 2, weights and KV cache dropped, weights reloaded on wake;
* ``stop``: the engine is shut down (its ``EngineCore`` process exits and every byte it
  held is freed) and started again on wake. The only mechanism that frees memory on CPU.

The replica itself (a small Python process) stays, so Serve's routing, health checks and
handles are untouched: a sleeping model is *not awake*, not *down*. The replica also
reports its engine's footprint (``deployments/llm/footprint.py``) so the manager's ledger
holds measured figures, not only the plan.

Built on Ray Serve LLM's public extension points: the server subclasses ``LLMServer``
and uses its ``start``, ``sleep``, ``wakeup`` and ``engine``; the engine is injected as
``engine_cls`` (``deployments/llm/engine.py``: stop, warm-up and weight reload are its
methods); the lifecycle travels in the model's ``LLMConfig``. The one private step it
replaces (stream batching) is named in ``serve/kernel/ray_private.py``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from ray.serve.llm.deployment import LLMServer

from deployments.llm.footprint import engine_footprint
from deployments.llm.lifecycle import EngineLifecycle
from deployments.llm.safe_start import lock_path, serialized_start
from deployments.llm.streaming import first_chunks_at_once
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.errors import ModelAsleep
from serve.kernel.ray_private import replace_stream_batching, stream_batching_interval_ms

logger = logging.getLogger("ray.serve")


class SwappableLLMServer(LLMServer):
    """LLMServer with engine_sleep / engine_wake / engine_state / engine_footprint.

    Args:
        llm_config: The model's config; its lifecycle rides in ``experimental_configs``
            (:class:`~deployments.llm.lifecycle.EngineLifecycle`).
        **kwargs: LLMServer's own (``engine_cls``: the engine class to build).
    """

    async def __init__(self, llm_config: Any, **kwargs: Any) -> None:
        self._lifecycle = EngineLifecycle.of(llm_config)
        self._model_id = llm_config.model_id
        self._stream_interval_ms = None
        await super().__init__(llm_config, **kwargs)

    async def start(self) -> None:
        keep_to_control_plane()  # this replica detokenizes and streams: off the engines' cores
        self._engine_lock = asyncio.Lock()
        self._asleep = not self._lifecycle.start_awake
        self._engine_stopped = self._asleep  # a model on demand starts with no engine
        if not self._asleep:
            await self._start_engine_now()

    async def _start_engine_now(self) -> None:
        """Start the engine (off the event loop: :mod:`deployments.llm.engine`); a start
        that fails leaves no half-built engine behind for requests to meet."""
        import ray

        try:
            if self._lifecycle.serialize_start:
                async with serialized_start(lock_path([str(g) for g in ray.get_gpu_ids()])):
                    await super().start()
            else:
                await super().start()
        except BaseException:
            await self._stop_engine()
            raise

    def _engine_running(self) -> bool:
        return not self._asleep and self.engine is not None

    async def chat(self, request, raw_request_info=None):
        """LLMServer's chat, or :class:`~serve.kernel.errors.ModelAsleep` as the stream's only
        item when the engine is not running (a typed answer, never an AttributeError)."""
        if not self._engine_running():
            return self._asleep_stream()
        return await super().chat(request, raw_request_info)

    async def completions(self, request, raw_request_info=None):
        """LLMServer's completions, or :class:`~serve.kernel.errors.ModelAsleep` (see :meth:`chat`)."""
        if not self._engine_running():
            return self._asleep_stream()
        return await super().completions(request, raw_request_info)

    async def _asleep_stream(self):
        yield ModelAsleep.of(self._model_id)

    def first_token_at_once(self, generator):
        """Ray Serve LLM's stream batching, but the first token goes out as it comes
        (:mod:`deployments.llm.streaming`)."""
        if self._stream_interval_ms is None:
            self._stream_interval_ms = stream_batching_interval_ms(self)
        return first_chunks_at_once(generator, self._stream_interval_ms)

    async def engine_state(self) -> str:
        """``awake`` or ``asleep``, as the engine itself is."""
        return "asleep" if self._asleep else "awake"

    async def engine_footprint(self) -> dict[str, float]:
        """Memory the engine processes hold now (GiB); see :func:`~deployments.llm.footprint.engine_footprint`."""
        return await asyncio.to_thread(engine_footprint)

    async def engine_sleep(self) -> dict[str, Any]:
        """Put the engine to sleep by the profile's mechanism; a no-op when asleep.

        Returns the mechanism, the seconds it took and the footprint before and after.
        """
        async with self._engine_lock:
            before = await asyncio.to_thread(engine_footprint)
            started = time.perf_counter()
            if not self._asleep:
                if self._lifecycle.mechanism == "stop":
                    await self._stop_engine()
                else:
                    await self.sleep(level=1 if self._lifecycle.mechanism == "level1" else 2)
                self._asleep = True
            elapsed = time.perf_counter() - started
            after = await asyncio.to_thread(engine_footprint)
        return {"mechanism": self._lifecycle.mechanism, "seconds": round(elapsed, 3), "before": before, "after": after}

    async def engine_wake(self) -> dict[str, Any]:
        """Wake the engine (a full start after ``stop`` or on first use); a no-op when awake."""
        async with self._engine_lock:
            started = time.perf_counter()
            how = "none"
            if self._asleep:
                if self._engine_stopped:
                    how = "start"
                    await self._start_engine_now()
                    self._engine_stopped = False
                elif self._lifecycle.mechanism == "level2":
                    how = "wakeup+reload"  # level 2 dropped the weights: reload them, then the KV cache
                    await self.wakeup(tags=["weights"])
                    await self.engine.reload_weights()
                    await self.wakeup(tags=["kv_cache"])
                else:
                    how = "wakeup"
                    await self.wakeup()
                self._asleep = False
                await self.engine.warm_up()
            elapsed = time.perf_counter() - started
            after = await asyncio.to_thread(engine_footprint)
        return {"how": how, "seconds": round(elapsed, 3), "after": after}

    async def _stop_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await engine.stop()
        del engine
        gc.collect()
        self._engine_stopped = True

    async def check_health(self) -> None:
        if self._asleep:
            return  # asleep is not down: the replica stays, the manager wakes it
        await super().check_health()


replace_stream_batching(SwappableLLMServer, SwappableLLMServer.first_token_at_once)
