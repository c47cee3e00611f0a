"""The residency manager's transitions: waking and putting engines to sleep, one at a
time per model, and what it learns from the engines themselves.

A transition is a task of its own (a waiter that gives up never cancels a wake others
wait for); :class:`Transitions` keeps the one each model is in, moves the ledger's
states as the engine's answers come, publishes them as metrics, and asks the engines
for their state (after a manager restart) and their memory (every few seconds).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any, Optional

from deployments.residency.ledger import STATES, Entry
from deployments.residency.turns import Turns
from serve.kernel.config import ResidencySpec
from serve.kernel.errors import ModelUnavailable
from serve.kernel.observability import replica_metric

logger = logging.getLogger("ray.serve")

WAKE_BOUNDARIES_S = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
#: How long asking an engine for its state or its memory may take.
MEASURE_TIMEOUT_S = 5.0


class Transitions:
    """The engines' wakes and sleeps, and what they report.

    Args:
        handles: The LLM deployments' handles by model id.
        entries: The ledger's entries by model id.
        spec: The profile's residency block (Retry-After).
        turns: The turns, told of every state change.
    """

    def __init__(self, handles: dict[str, Any], entries: dict[str, Entry], spec: ResidencySpec, turns: Turns) -> None:
        self._handles = handles
        self._entries = entries
        self._spec = spec
        self._turns = turns
        self._tasks: dict[str, asyncio.Task] = {}

    def running(self, entry: Entry) -> Optional[asyncio.Task]:
        """The transition ``entry`` is in, if one is still running."""
        task = self._tasks.get(entry.model_id)
        return task if task is not None and not task.done() else None

    def start(self, entry: Entry, work) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks[entry.model_id] = task

        def forget(done: asyncio.Task) -> None:
            if self._tasks.get(entry.model_id) is done:
                del self._tasks[entry.model_id]
        task.add_done_callback(forget)
        return task

    async def run(self, entry: Entry, work) -> Any:
        return await asyncio.shield(self.start(entry, work))

    async def wake(self, entry: Entry, victims: list[Entry]) -> dict[str, Any]:
        for victim in victims:
            task = self._tasks.get(victim.model_id)
            if task is not None:
                await asyncio.shield(task)  # their memory first
        self.set_state(entry, "waking")
        started = time.perf_counter()
        try:
            result = await self._handles[entry.model_id].engine_wake.remote()
        except Exception as exc:
            self.set_state(entry, "asleep")
            logger.error("waking %s failed: %r", entry.model_id, exc)
            raise ModelUnavailable(f"model {entry.model_id!r} failed to wake", code="model_wake_failed",
                              headers={"Retry-After": str(self._spec.retry_after_s)}) from None
        seconds = time.perf_counter() - started
        entry.measured_gib = _held(result["after"])
        entry.wakes += 1
        entry.last_used = entry.awake_since = time.monotonic()
        self.set_state(entry, "awake")
        _switches().inc(tags={"model": entry.model_id, "direction": "wake", "mechanism": entry.mechanism})
        _wake_seconds().observe(seconds, tags={"model": entry.model_id, "mechanism": entry.mechanism})
        logger.info("woke %s in %.2f s (%s; evicted %s); holds %.2f GiB", entry.model_id, seconds, result["how"],
                    [v.model_id for v in victims] or "none", entry.held_gib)
        return result

    async def sleep(self, entry: Entry) -> dict[str, Any]:
        self.set_state(entry, "sleeping")
        try:
            result = await self._handles[entry.model_id].engine_sleep.remote()
        except Exception as exc:
            # The engine's state is unknown: count it as awake (its memory held) and retry later.
            self.set_state(entry, "awake")
            logger.error("putting %s to sleep failed: %r", entry.model_id, exc)
            raise ModelUnavailable(f"model {entry.model_id!r} failed to sleep", code="model_sleep_failed") from None
        self.set_state(entry, "asleep")
        _switches().inc(tags={"model": entry.model_id, "direction": "sleep", "mechanism": entry.mechanism})
        freed = _held(result["before"]) - _held(result["after"])
        logger.info("%s asleep (%s) in %.2f s; freed %.2f GiB", entry.model_id, result["mechanism"],
                    result["seconds"], freed)
        return {**result, "freed_gib": round(freed, 3)}

    def set_state(self, entry: Entry, state: str) -> None:
        entry.state = state
        self.publish(entry)
        self._turns.notify()

    @staticmethod
    def publish(entry: Entry) -> None:
        gauge = _state_gauge()
        for state in STATES:
            gauge.set(1.0 if entry.state == state else 0.0, tags={"model": entry.model_id, "state": state})

    async def reconcile(self) -> None:
        """Take each on-demand engine's own word for its state: a manager that was restarted
        (its replica died) must not count an awake engine as asleep, or the budget lies."""
        for entry in list(self._entries.values()):
            if not entry.on_demand or self.running(entry) is not None:
                continue
            try:
                state = await asyncio.wait_for(self._handles[entry.model_id].engine_state.remote(), MEASURE_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the replica may still be starting: it starts asleep
                logger.debug("asking %s for its state failed: %r", entry.model_id, exc)
                continue
            if state != entry.state and self.running(entry) is None:
                logger.info("%s reports itself %s (the ledger had %s)", entry.model_id, state, entry.state)
                self.set_state(entry, state)

    async def measure_awake(self) -> None:
        """Replace the plan's figure with what each awake engine holds now (resident ones
        too: they never wake, so this is where the ledger learns their size)."""
        for entry in list(self._entries.values()):
            if entry.state != "awake" or self.running(entry) is not None:
                continue
            try:
                footprint = await asyncio.wait_for(self._handles[entry.model_id].engine_footprint.remote(), MEASURE_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - keep the last figure; the engine may be starting
                logger.debug("measuring %s failed: %r", entry.model_id, exc)
                continue
            if entry.state == "awake" and _held(footprint) > 0:
                entry.measured_gib = _held(footprint)


def _held(footprint: dict[str, float]) -> float:
    """The figure the budget counts: GPU memory where measured, resident memory on CPU."""
    return footprint.get("gpu_gib", footprint.get("rss_gib", 0.0))


def _state_gauge():
    return replica_metric("Gauge", "llmgraph_model_state", "1 for the state each LLM is in (awake, asleep, waking, "
                          "sleeping), 0 for the others.", ("model", "state"))


def _switches():
    return replica_metric("Counter", "llmgraph_model_switches_total", "Wakes and sleeps of on-demand LLMs.",
                          ("model", "direction", "mechanism"))


def _wake_seconds():
    return replica_metric("Histogram", "llmgraph_model_wake_seconds", "Time an on-demand LLM took to wake.",
                          ("model", "mechanism"), WAKE_BOUNDARIES_S)
