"""A vLLM engine for Ray Serve LLM whose start never blocks its replica's event loop.

Ray Serve LLM's ``VLLMEngine.start`` is a coroutine, but two of its steps are plain calls:
preparing the engine config (a Ray task and ``ray.get`` on a GPU) and constructing
vLLM's ``AsyncLLM``, which launches the EngineCore process and waits, synchronously, for
the model to load. That wait held the replica's only event loop for 16-37 s on 2 cores,
longer on a GPU for a 14B model: Serve's health checks went unanswered, the replica was
replaced mid-wake, and the next request met a replica with no engine (a 500).

:class:`OffLoopStartEngine` (passed as ``engine_cls``, Ray Serve LLM's injection point)
runs both steps in a worker thread, from the one awaited hook ``start`` has before them
(the callback's ``on_after_node_init``, :class:`~deployments.llm.callbacks.EngineStartCallback`),
and hands ``start`` what they built. vLLM builds an ``AsyncLLM`` outside an event loop by
design: its output tasks start on the first request, on the replica's loop. While the
engine starts, the loop answers health checks, state queries and requests (which are told
the model is asleep, :class:`deployments.llm.swappable`).

The methods taken over are named, in ``start``'s order, in
:data:`serve.kernel.ray_private.VLLM_ENGINE_START_STEPS`; ``tests/unit/test_ray_private.py``
fails when a Ray upgrade moves them.

The engine also does what the residency manager's sleep and wake need of it and
``VLLMEngine`` does not offer: :meth:`OffLoopStartEngine.stop` (the EngineCore process
exits and its memory is freed), :meth:`~OffLoopStartEngine.warm_up` (one token) and
:meth:`~OffLoopStartEngine.reload_weights` (after a level-2 sleep); on a GPU its start
gives vLLM the profile's GiB of whatever card it finds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any, Optional

from deployments.llm.footprint import card_gib, memory_utilization
from deployments.llm.lifecycle import EngineLifecycle
from serve.kernel.ray_private import VLLMEngine, engine_client

logger = logging.getLogger("ray.serve")

#: Where the engine leaves itself in the start callback's context (``CallbackCtx.custom_data``).
ENGINE_KEY = "llmgraph_off_loop_engine"


class OffLoopStartEngine(VLLMEngine):
    """``VLLMEngine`` with its blocking start steps run in a thread (see the module)."""

    def __init__(self, llm_config: Any) -> None:
        super().__init__(llm_config)
        self._prepared: Optional[tuple[Any, Any, Any]] = None
        self._built: Any = None

    async def start(self) -> None:
        self._fit_to_card()
        callback = self.llm_config.get_or_create_callback()
        callback.ctx.custom_data[ENGINE_KEY] = self
        try:
            await super().start()
        finally:
            callback.ctx.custom_data.pop(ENGINE_KEY, None)
            self._prepared = self._built = None

    async def build_off_loop(self, callback_ctx: Any) -> None:
        """Prepare the engine config and construct the engine client in a worker thread.

        Called by the start callback after node initialisation; ``start`` then takes the
        results instead of building them on the loop.
        """
        from serve.kernel.settings import load_settings

        delay_s = load_settings().engine_start_delay_s
        started = time.perf_counter()
        self._prepared = await asyncio.to_thread(self._prepare_in_thread, callback_ctx, delay_s)
        engine_args, _, engine_config = self._prepared
        self._built = await asyncio.to_thread(
            self._start_on_engine_cores, engine_args, engine_config, callback_ctx.placement_group)
        logger.info("engine built off the event loop in %.1f s", time.perf_counter() - started)

    def _prepare_in_thread(self, callback_ctx: Any, delay_s: float) -> tuple[Any, Any, Any]:
        if delay_s:
            logger.warning("LLMGRAPH_ENGINE_START_DELAY_S: the engine start waits %.1f s first", delay_s)
            time.sleep(delay_s)
        return super()._prepare_engine_config(callback_ctx)

    def _start_on_engine_cores(self, engine_args: Any, engine_config: Any, placement_group: Any):
        """Start the engine from a thread that runs on the engine's cores, so the processes
        it spawns are born there (a child inherits its creator thread's affinity).

        The replica keeps the control plane's cores, and the plugin that pins the engine's
        processes (``engine_cores.py``) runs only once vLLM has been imported in them: until
        then, an engine started by a replacement replica (a node back, a replica replaced
        under load) would import torch and vLLM on a control core the replicas keep busy.
        """
        from serve.kernel.cpu_affinity import parse_core_list, pin_this_process
        from serve.kernel.settings import load_settings

        cores = parse_core_list(load_settings().engine_cores)
        before = os.sched_getaffinity(0)
        try:
            if cores:
                os.sched_setaffinity(0, cores)  # this thread only
        except OSError as exc:
            logger.warning("could not start the engine on cores %s: %s", sorted(cores), exc)
        try:
            return super()._start_async_llm_engine(engine_args, engine_config, placement_group)
        finally:
            # This thread, and the threads the engine client started from it in this
            # process, go back to the replica's cores.
            pin_this_process(before)

    def _prepare_engine_config(self, callback_ctx: Any):
        return self._prepared if self._prepared is not None else super()._prepare_engine_config(callback_ctx)

    def _start_async_llm_engine(self, engine_args: Any, engine_config: Any, placement_group: Any):
        if self._built is not None:
            built, self._built = self._built, None
            return built
        return super()._start_async_llm_engine(engine_args, engine_config, placement_group)

    async def check_health(self) -> None:
        if engine_client(self) is None:
            return  # still starting: the start itself fails loudly if it fails
        await super().check_health()

    def _fit_to_card(self) -> None:
        """Give vLLM the profile's GiB, not its fraction, of the card found here."""
        import ray

        budget = EngineLifecycle.of(self.llm_config).memory_budget_gib
        ids = ray.get_gpu_ids() if budget else []
        total = card_gib(int(ids[0]) if ids else 0) if budget else None
        if budget and total:
            share = memory_utilization(budget, total)
            self.llm_config.engine_kwargs["gpu_memory_utilization"] = share
            logger.info("GPU memory: %.2f GiB of this %.1f GiB card (gpu_memory_utilization %.4f)", budget, total, share)

    async def stop(self) -> None:
        """Shut the engine down: its EngineCore process exits and every byte it held is
        freed (``VLLMEngine.shutdown`` closes only its token channel)."""
        client = engine_client(self)
        if client is not None:
            await asyncio.to_thread(client.shutdown)
        await self.shutdown()

    async def reload_weights(self) -> None:
        """Load the weights again after a level-2 sleep dropped them."""
        await self.collective_rpc("reload_weights")

    async def warm_up(self) -> None:
        """One token through the engine, so that the first request after a wake does not
        pay for the first forward pass (about 1.7 s of a tiny model's first request on
        CPU). A failed warm-up is logged; the engine is still awake."""
        from vllm import SamplingParams

        try:
            async for _ in engine_client(self).generate(
                    "warm up", SamplingParams(max_tokens=1), request_id=f"llmgraph-warm-up-{uuid.uuid4().hex}"):
                pass
        except Exception as exc:  # noqa: BLE001 - the wake itself succeeded
            logger.warning("warm-up after wake failed: %r", exc)
