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
reports its engine's footprint (resident memory of the engine processes, and GPU memory
by NVML where there is a GPU) so the manager's ledger holds measured figures, not only
the plan.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import psutil

logger = logging.getLogger("ray.serve")

_GIB = 1024 ** 3


@dataclass(frozen=True)
class EngineLifecycle:
    """How one LLM replica's engine lives: whether it starts awake, how it sleeps, and
    (on a GPU) how much of the card it may take."""

    start_awake: bool
    mechanism: str  # "level1", "level2" or "stop"
    serialize_start: bool  # GPU: engines start one at a time (deployments/llm/safe_start)
    memory_budget_gib: Optional[float] = None
    """GPU: the engine's share of the profile's ``gpu_memory_gib``. On a card of another
    size vLLM gets the same GiB, not the same fraction (:func:`memory_utilization`)."""


def memory_utilization(budget_gib: float, card_gib: float) -> float:
    """vLLM's ``gpu_memory_utilization`` for ``budget_gib`` of a ``card_gib`` card.

    A profile sized for a 16 GB card then takes 16 GB of an 80 or 141 GB one (so its plan
    can be checked there, and a user can give the graph part of a shared card).

    Raises:
        ValueError: the card is smaller than the budget.
    """
    if budget_gib > card_gib:
        raise ValueError(f"the engine's budget of {budget_gib:.2f} GiB is more than this card's {card_gib:.2f} GiB")
    return round(budget_gib / card_gib, 4)


def card_gib(index: int = 0) -> Optional[float]:
    """Total memory of GPU ``index`` by NVML (GiB), or None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return None
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total / _GIB
    finally:
        pynvml.nvmlShutdown()


def engine_footprint(root_pid: Optional[int] = None) -> dict[str, float]:
    """Memory the engine processes under ``root_pid`` (default: this replica) hold, in GiB.

    ``rss_gib`` sums the resident memory of every descendant process (vLLM's EngineCore
    and its workers); ``gpu_gib`` sums their GPU memory by NVML, or is absent without a
    GPU. The replica's own memory is left out: it stays while the engine sleeps.
    """
    root = psutil.Process(root_pid or os.getpid())
    pids, rss = set(), 0
    for child in root.children(recursive=True):
        try:
            rss += child.memory_info().rss
            pids.add(child.pid)
        except psutil.Error:
            continue
    footprint = {"rss_gib": round(rss / _GIB, 3)}
    gpu = _nvml_bytes(pids | {root.pid})
    if gpu is not None:
        footprint["gpu_gib"] = round(gpu / _GIB, 3)
    return footprint


def _nvml_bytes(pids: set[int]) -> Optional[int]:
    """GPU memory the processes ``pids`` use on any card, or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU: there is nothing to measure
        return None
    try:
        used = 0
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in pids and proc.usedGpuMemory:
                    used += proc.usedGpuMemory
        return used
    finally:
        pynvml.nvmlShutdown()


def make_server_cls(lifecycle: EngineLifecycle):
    """The LLMServer class for one model, with ``lifecycle`` baked in (it is pickled with it)."""
    import ray
    from ray.serve.llm.deployment import LLMServer

    from deployments.llm.safe_start import lock_path, serialized_start

    class SwappableLLMServer(LLMServer):
        """LLMServer with engine_sleep / engine_wake / engine_state / engine_footprint."""

        _lifecycle = lifecycle

        async def start(self):
            from serve.kernel.core_plan import keep_to_control_plane

            keep_to_control_plane()  # this replica detokenizes and streams: off the engines' cores
            self._engine_lock = asyncio.Lock()
            self._asleep = not self._lifecycle.start_awake
            self._engine_stopped = self._asleep  # a model on demand starts with no engine
            if not self._asleep:
                await self._start_engine_now()

        async def _start_engine_now(self) -> None:
            """Start the engine (off the event loop: :mod:`deployments.llm.engine`); a
            start that fails leaves no half-built engine behind for requests to meet."""
            self._fit_to_card()
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
            from serve.kernel.errors import ModelAsleep

            yield ModelAsleep.of(self._llm_config.model_id)

        def _fit_to_card(self) -> None:
            """Give vLLM the profile's GiB, not its fraction, of the card found here."""
            budget = self._lifecycle.memory_budget_gib
            ids = ray.get_gpu_ids()
            total = card_gib(int(ids[0]) if ids else 0) if budget else None
            if budget and total:
                share = memory_utilization(budget, total)
                self._llm_config.engine_kwargs["gpu_memory_utilization"] = share
                logger.info("GPU memory: %.2f GiB of this %.1f GiB card (gpu_memory_utilization %.4f)", budget, total, share)

        def _batch_output_stream(self, generator):
            """Ray Serve LLM's batches, but the first token goes out as it comes
            (:mod:`deployments.llm.streaming`)."""
            from deployments.llm.streaming import first_chunks_at_once

            return first_chunks_at_once(generator, self._get_batch_interval_ms())

        async def engine_state(self) -> str:
            """``awake`` or ``asleep``, as the engine itself is."""
            return "asleep" if self._asleep else "awake"

        async def engine_footprint(self) -> dict[str, float]:
            """Memory the engine processes hold now (GiB); see :func:`engine_footprint`."""
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
            return {"mechanism": self._lifecycle.mechanism, "seconds": round(elapsed, 3),
                    "before": before, "after": after}

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
                        await self.engine._engine_client.collective_rpc("reload_weights")
                        await self.wakeup(tags=["kv_cache"])
                    else:
                        how = "wakeup"
                        await self.wakeup()
                    self._asleep = False
                    await self._warm_up()
                elapsed = time.perf_counter() - started
                after = await asyncio.to_thread(engine_footprint)
            return {"how": how, "seconds": round(elapsed, 3), "after": after}

        async def _warm_up(self) -> None:
            """One token through the woken engine, so that the first request does not pay
            for the first forward pass (measured on CPU: about 1.7 s of a tiny model's first
            request after a start). A failed warm-up is logged; the engine is still awake."""
            from vllm import SamplingParams

            try:
                async for _ in self.engine._engine_client.generate(
                        "warm up", SamplingParams(max_tokens=1), request_id=f"llmgraph-warm-up-{uuid.uuid4().hex}"):
                    pass
            except Exception as exc:  # noqa: BLE001 - the wake itself succeeded
                logger.warning("warm-up after wake failed: %r", exc)

        async def _stop_engine(self) -> None:
            engine, self.engine = self.engine, None
            if engine is not None:
                client = getattr(engine, "_engine_client", None)
                if client is not None:
                    await asyncio.to_thread(client.shutdown)  # EngineCore exits, its memory is freed
                await engine.shutdown()
            del engine
            gc.collect()
            self._engine_stopped = True

        async def check_health(self) -> None:
            if self._asleep:
                return  # asleep is not down: the replica stays, the manager wakes it
            await super().check_health()

    SwappableLLMServer.__name__ = SwappableLLMServer.__qualname__ = "SwappableLLMServer"
    return SwappableLLMServer
