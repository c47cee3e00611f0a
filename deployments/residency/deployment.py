"""The residency manager: wakes on-demand models for the requests that need them.

One replica per graph (one per GPU node): it holds the :class:`~deployments.residency.ledger.Ledger`
and is the only caller of the LLM replicas' ``engine_wake`` / ``engine_sleep``.

* **Wake on request.** A dispatcher about to send a request to an on-demand model first
  calls :meth:`Residency.acquire`. An awake model answers at once; a sleeping one is
  woken, and every request that arrives meanwhile waits for that same wake (bounded by
  ``residency.wake_timeout_s``, then 503 with Retry-After). The request's lease, counted
  from before the wake to the stream's last byte (:meth:`release`), keeps the model from
  being put to sleep under it.
* **Eviction.** When the budget needs room, the least recently used idle on-demand
  models sleep first; a model with requests in flight is never evicted, nor one woken
  less than ``residency.min_awake_s`` ago by requests.
* **Turns.** When the room is held by such a model, the wake waits its turn
  (deployments/residency/turns.py): the other model finishes what it has and sleeps.
  Only when resident models hold the room is the wake refused with a clear 503.
* **Idle sleep.** A loop puts on-demand models to sleep after their ``idle_sleep_s``.
* **Operators** pre-warm or free a model (``POST /v1/models/{id}/wake`` and ``/sleep``).

Resident models are in the ledger too (their memory counts) but are never woken or put
to sleep, and their requests never call the manager: they pay no hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from typing import Any, Optional

from deployments.residency.ledger import STATES, CannotFit, Entry, Ledger
from deployments.residency.turns import Turns
from serve.kernel.config import Profile
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.errors import BadRequest, Conflict, GraphError, ModelUnavailable, NotFound
from serve.kernel.observability import replica_metric
from serve.kernel.residency_plan import build_residency_plan

logger = logging.getLogger("ray.serve")

WAKE_BOUNDARIES_S = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
#: How often the awake engines' memory is measured (and the state gauges published again),
#: and how long one measurement may take.
MEASURE_EVERY_S = 10.0
MEASURE_TIMEOUT_S = 5.0


def _errors_as_values(method):
    """A typed error is returned, not raised: it crosses the handle intact (status, code,
    Retry-After), where a raised one would arrive wrapped in Ray's task error."""
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except GraphError as exc:
            return exc
    return wrapper


class Residency:
    """The Serve deployment that owns the ledger.

    Args:
        profile: The profile (its models, their residency, the budget).
        llms: The LLM deployments' handles by role.
    """

    async def __init__(self, profile: Profile, llms: dict[str, Any]) -> None:
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        plan = build_residency_plan(profile)
        self._spec = profile.residency
        self._handles = {profile.llm(role).model_id: handle for role, handle in llms.items()}
        entries = []
        for row, spec in zip(plan.rows, profile.models):
            entries.append(Entry(role=spec.role, model_id=spec.model_id, on_demand=spec.on_demand,
                                 mechanism=row.mechanism, planned_gib=row.awake_gib, idle_sleep_s=spec.idle_sleep_s,
                                 state="asleep" if spec.on_demand else "awake", last_used=time.monotonic()))
        self._ledger = Ledger(entries, plan.budget_gib, self._spec.retry_after_s)
        self._decide = asyncio.Lock()  # one eviction decision at a time
        self._turns = Turns(self._ledger, self._spec.min_awake_s)
        self._transitions: dict[str, asyncio.Task] = {}
        self._idle_task = asyncio.get_running_loop().create_task(self._idle_loop(), context=contextvars.Context())

    async def check_health(self) -> None:
        if self._idle_task.done():
            raise RuntimeError("the idle-sleep loop stopped")

    # ----------------------------------------------------------------- requests
    @_errors_as_values
    async def acquire(self, model_id: str) -> float:
        """Take a lease on ``model_id`` for one request, waking it first when needed.

        Returns:
            How long the request waited for its turn and the wake, in milliseconds (0
            when the model was awake and taking requests).

        Raises:
            Unavailable: the turn and the wake took longer than ``wake_timeout_s``
                (``model_waking``), the wake failed, or resident models hold the room
                (``model_cannot_fit``); all carry Retry-After.
        """
        entry = self._entry(model_id)
        started = time.perf_counter()
        deadline = time.monotonic() + self._spec.wake_timeout_s
        turn = self._turns.yields(entry)
        if turn:
            await self._turns.wait_for_turn(entry, deadline, lambda: self._late(entry))
        entry.in_flight += 1  # counted first: a model with a lease is never put to sleep
        entry.last_used = time.monotonic()
        if entry.state == "awake" and self._running(entry) is None:
            return round((time.perf_counter() - started) * 1000, 1) if turn else 0.0
        try:
            await self._awake_in_time(entry, deadline - time.monotonic())
        except BaseException:
            entry.in_flight -= 1
            self._turns.notify()
            raise
        return round((time.perf_counter() - started) * 1000, 1)

    async def release(self, model_id: str) -> None:
        """End one request's lease (its answer's last byte has gone)."""
        entry = self._entry(model_id)
        entry.in_flight = max(entry.in_flight - 1, 0)
        entry.last_used = time.monotonic()
        self._turns.notify()

    # ---------------------------------------------------------------- operators
    @_errors_as_values
    async def wake(self, model_id: str) -> dict[str, Any]:
        """Wake ``model_id`` now (pre-warm before a batch); its state afterwards."""
        entry = self._entry(model_id)
        started = time.perf_counter()
        entry.in_flight += 1  # not evicted by another wake while this one completes
        try:
            await self._awake_in_time(entry, self._spec.wake_timeout_s, min_awake_s=0.0)
        finally:
            entry.in_flight -= 1
            entry.last_used = time.monotonic()
            self._turns.notify()
        return {**entry.view(), "waited_ms": round((time.perf_counter() - started) * 1000, 1)}

    @_errors_as_values
    async def sleep(self, model_id: str) -> dict[str, Any]:
        """Put ``model_id`` to sleep now; what its engine held before and after.

        Raises:
            BadRequest: the model is resident.
            Conflict: it has requests in flight (it is not put to sleep under them).
        """
        entry = self._entry(model_id)
        if not entry.on_demand:
            raise BadRequest(f"model {model_id!r} is resident: it stays awake", param="model", code="model_resident")
        while (running := self._running(entry)) is not None:
            await asyncio.shield(running)
        if entry.in_flight:
            raise Conflict(f"model {model_id!r} has {entry.in_flight} requests in flight; it sleeps once they finish",
                           code="model_busy")
        if entry.state == "asleep":
            return {**entry.view(), "result": None}
        result = await self._transition(entry, self._sleep_engine(entry))
        return {**entry.view(), "result": result}

    async def engine_found_asleep(self, model_id: str) -> None:
        """A request met ``model_id``'s replica without a running engine (a replica that
        Serve replaced starts asleep): take the engine's word, so the next lease wakes it."""
        entry = self._entry(model_id)
        if entry.on_demand and self._running(entry) is None and entry.state == "awake":
            logger.warning("%s was found asleep while the ledger had it awake (its replica was replaced?)",
                           model_id)
            self._set_state(entry, "asleep")

    async def states(self) -> list[dict[str, Any]]:
        """Every LLM's residency, state and memory, in profile order."""
        return [entry.view() for entry in self._ledger.entries.values()]

    # -------------------------------------------------------------- transitions
    def _entry(self, model_id: str) -> Entry:
        try:
            return self._ledger.entries[model_id]
        except KeyError:
            raise NotFound(f"model {model_id!r} does not exist; GET /v1/models lists the models",
                           param="model", code="model_not_found") from None

    async def _awake_in_time(self, entry: Entry, timeout_s: float, *, min_awake_s: Optional[float] = None) -> None:
        """:meth:`_ensure_awake`, bounded by ``timeout_s`` (the wake itself goes on)."""
        try:
            await asyncio.wait_for(self._ensure_awake(entry, min_awake_s), max(timeout_s, 0.0))
        except asyncio.TimeoutError:
            raise self._late(entry) from None

    def _late(self, entry: Entry) -> ModelUnavailable:
        return ModelUnavailable(f"model {entry.model_id!r} did not wake within {self._spec.wake_timeout_s:.0f} s",
                                code="model_waking", headers={"Retry-After": str(self._spec.retry_after_s)})

    def _running(self, entry: Entry) -> Optional[asyncio.Task]:
        """The transition ``entry`` is in, if one is still running."""
        task = self._transitions.get(entry.model_id)
        return task if task is not None and not task.done() else None

    async def _ensure_awake(self, entry: Entry, min_awake_s: Optional[float] = None) -> None:
        """Wait for ``entry`` to be awake: one wake serves every waiter. A failed wake
        fails its waiters; the next request tries again. When the memory it needs is
        held by models that are busy or woke less than ``min_awake_s`` ago, it waits its
        turn, counted as waiting (which makes them yield: deployments/residency/turns.py)."""
        min_awake_s = self._spec.min_awake_s if min_awake_s is None else min_awake_s
        with contextlib.ExitStack() as counted:
            is_counted = False
            while True:
                running = self._running(entry)
                if running is None and entry.state != "awake":
                    running = await self._begin_wake(entry, min_awake_s)
                    if running is None and entry.state != "awake":
                        if not is_counted:
                            counted.enter_context(self._turns.waiting(entry))
                            is_counted = True
                        await self._turns.changes()
                        continue
                if running is None:
                    return
                await asyncio.shield(running)

    async def _begin_wake(self, entry: Entry, min_awake_s: float) -> Optional[asyncio.Task]:
        """Start ``entry``'s wake and its victims' sleeps: the running transition, or None
        when the memory is not free yet (or ``entry`` woke meanwhile).

        Raises:
            CannotFit: it never will fit (the budget is held by resident models).
        """
        async with self._decide:
            running = self._running(entry)
            if running is not None or entry.state == "awake":
                return running
            try:
                victims = self._ledger.evictions_for(entry, now=time.monotonic(), min_awake_s=min_awake_s)
            except CannotFit as refusal:
                if not refusal.later:
                    raise
                return None
            for victim in victims:
                self._start(victim, self._sleep_engine(victim))
            return self._start(entry, self._wake_engine(entry, victims))

    def _start(self, entry: Entry, work) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._transitions[entry.model_id] = task

        def forget(done: asyncio.Task) -> None:
            if self._transitions.get(entry.model_id) is done:
                del self._transitions[entry.model_id]
        task.add_done_callback(forget)
        return task

    async def _transition(self, entry: Entry, work) -> Any:
        return await asyncio.shield(self._start(entry, work))

    async def _wake_engine(self, entry: Entry, victims: list[Entry]) -> dict[str, Any]:
        for victim in victims:
            task = self._transitions.get(victim.model_id)
            if task is not None:
                await asyncio.shield(task)  # their memory first
        self._set_state(entry, "waking")
        started = time.perf_counter()
        try:
            result = await self._handles[entry.model_id].engine_wake.remote()
        except Exception as exc:
            self._set_state(entry, "asleep")
            logger.error("waking %s failed: %r", entry.model_id, exc)
            raise ModelUnavailable(f"model {entry.model_id!r} failed to wake", code="model_wake_failed",
                              headers={"Retry-After": str(self._spec.retry_after_s)}) from None
        seconds = time.perf_counter() - started
        entry.measured_gib = _held(result["after"])
        entry.wakes += 1
        entry.last_used = entry.awake_since = time.monotonic()
        self._set_state(entry, "awake")
        _switches().inc(tags={"model": entry.model_id, "direction": "wake", "mechanism": entry.mechanism})
        _wake_seconds().observe(seconds, tags={"model": entry.model_id, "mechanism": entry.mechanism})
        logger.info("woke %s in %.2f s (%s; evicted %s); holds %.2f GiB", entry.model_id, seconds, result["how"],
                    [v.model_id for v in victims] or "none", entry.held_gib)
        return result

    async def _sleep_engine(self, entry: Entry) -> dict[str, Any]:
        self._set_state(entry, "sleeping")
        try:
            result = await self._handles[entry.model_id].engine_sleep.remote()
        except Exception as exc:
            # The engine's state is unknown: count it as awake (its memory held) and retry later.
            self._set_state(entry, "awake")
            logger.error("putting %s to sleep failed: %r", entry.model_id, exc)
            raise ModelUnavailable(f"model {entry.model_id!r} failed to sleep", code="model_sleep_failed") from None
        self._set_state(entry, "asleep")
        _switches().inc(tags={"model": entry.model_id, "direction": "sleep", "mechanism": entry.mechanism})
        freed = _held(result["before"]) - _held(result["after"])
        logger.info("%s asleep (%s) in %.2f s; freed %.2f GiB", entry.model_id, result["mechanism"],
                    result["seconds"], freed)
        return {**result, "freed_gib": round(freed, 3)}

    def _set_state(self, entry: Entry, state: str) -> None:
        entry.state = state
        self._publish(entry)
        self._turns.notify()

    @staticmethod
    def _publish(entry: Entry) -> None:
        gauge = _state_gauge()
        for state in STATES:
            gauge.set(1.0 if entry.state == state else 0.0, tags={"model": entry.model_id, "state": state})

    async def _reconcile(self) -> None:
        """Take each on-demand engine's own word for its state: a manager that was restarted
        (its replica died) must not count an awake engine as asleep, or the budget lies."""
        for entry in list(self._ledger.entries.values()):
            if not entry.on_demand or self._running(entry) is not None:
                continue
            try:
                state = await asyncio.wait_for(self._handles[entry.model_id].engine_state.remote(), MEASURE_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the replica may still be starting: it starts asleep
                logger.debug("asking %s for its state failed: %r", entry.model_id, exc)
                continue
            if state != entry.state and self._running(entry) is None:
                logger.info("%s reports itself %s (the ledger had %s)", entry.model_id, state, entry.state)
                self._set_state(entry, state)

    async def _idle_loop(self) -> None:
        await self._reconcile()
        measured_at = 0.0
        while True:
            await asyncio.sleep(self._spec.idle_check_s)
            for entry in self._ledger.idle(time.monotonic()):
                if self._running(entry) is None:
                    logger.info("%s idle for %.0f s: putting it to sleep", entry.model_id, entry.idle_sleep_s)
                    self._start(entry, self._sleep_engine(entry)).add_done_callback(_log_failure)
            if time.monotonic() - measured_at >= MEASURE_EVERY_S:
                measured_at = time.monotonic()
                await self._measure_awake()
                for entry in self._ledger.entries.values():
                    self._publish(entry)  # gauges set once (at start) are not always exported

    async def _measure_awake(self) -> None:
        """Replace the plan's figure with what each awake engine holds now (resident ones
        too: they never wake, so this is where the ledger learns their size)."""
        for entry in list(self._ledger.entries.values()):
            if entry.state != "awake" or self._running(entry) is not None:
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


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("idle sleep failed: %r", task.exception())


def _state_gauge():
    return replica_metric("Gauge", "llmgraph_model_state", "1 for the state each LLM is in (awake, asleep, waking, "
                          "sleeping), 0 for the others.", ("model", "state"))


def _switches():
    return replica_metric("Counter", "llmgraph_model_switches_total", "Wakes and sleeps of on-demand LLMs.",
                          ("model", "direction", "mechanism"))


def _wake_seconds():
    return replica_metric("Histogram", "llmgraph_model_wake_seconds", "Time an on-demand LLM took to wake.",
                          ("model", "mechanism"), WAKE_BOUNDARIES_S)
