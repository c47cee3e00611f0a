"""The residency manager: wakes on-demand models for the requests that need them.

One replica per graph: it holds the :class:`~deployments.residency.ledger.Ledger`
and is the only caller of the LLM replicas' ``engine_wake`` / ``engine_sleep``.

* **Wake on request.** A dispatcher about to send a request to an on-demand model first
  calls :meth:`Residency.acquire`. An awake model answers at once; a sleeping one is
  woken, and every request that arrives meanwhile waits for that same wake (bounded by
  ``residency.wake_timeout_s``, then 503 with Retry-After). The request's lease, counted
  from before the wake to the stream's last byte (:meth:`release`), keeps the model from
  being put to sleep under it.
* **Eviction.** The ledger keeps one budget per node (each node group's, and the
  budget of the models placed on no group). When a budget needs room, the least
  recently used idle on-demand models on the same node sleep first; a model with requests in flight is never evicted, nor one woken
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
import logging
import time
from typing import Any, Optional

from deployments.residency.ledger import CannotFit, Entry, Ledger
from deployments.residency.transitions import Transitions
from deployments.residency.turns import Turns
from serve.kernel.config import Profile
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.errors import BadRequest, Conflict, ModelUnavailable, NotFound, errors_as_values
from serve.kernel.residency_plan import build_residency_plans

logger = logging.getLogger("ray.serve")

#: How often the awake engines' memory is measured (and the state gauges published again).
MEASURE_EVERY_S = 10.0


class Residency:
    """The Serve deployment that owns the ledger.

    Args:
        profile: The profile (its models, their residency, the budget).
        llms: The LLM deployments' handles by role.
    """

    async def __init__(self, profile: Profile, llms: dict[str, Any]) -> None:
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        plans = build_residency_plans(profile)
        self._spec = profile.residency
        self._handles = {profile.llm(role).model_id: handle for role, handle in llms.items()}
        entries = []
        for plan in plans:
            for row in plan.rows:
                spec = profile.llm(row.role)
                entries.append(Entry(role=spec.role, model_id=spec.model_id, on_demand=spec.on_demand,
                                     mechanism=row.mechanism, planned_gib=row.awake_gib, idle_sleep_s=spec.idle_sleep_s,
                                     state="asleep" if spec.on_demand else "awake", last_used=time.monotonic(),
                                     node_group=plan.node_group))
        order = [spec.role for spec in profile.models]
        entries.sort(key=lambda entry: order.index(entry.role))
        budgets = {plan.node_group: plan.budget_gib for plan in plans}
        self._ledger = Ledger(entries, budgets.pop(None, None), self._spec.retry_after_s, group_budgets=budgets)
        self._decide = asyncio.Lock()  # one eviction decision at a time
        self._turns = Turns(self._ledger, self._spec.min_awake_s)
        self._moves = Transitions(self._handles, self._ledger.entries, self._spec, self._turns)
        self._idle_task = asyncio.get_running_loop().create_task(self._idle_loop(), context=contextvars.Context())

    async def check_health(self) -> None:
        if self._idle_task.done():
            raise RuntimeError("the idle-sleep loop stopped")

    # ----------------------------------------------------------------- requests
    @errors_as_values
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
        if entry.state == "awake" and self._moves.running(entry) is None:
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
    @errors_as_values
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

    @errors_as_values
    async def sleep(self, model_id: str) -> dict[str, Any]:
        """Put ``model_id`` to sleep now; what its engine held before and after.

        Raises:
            BadRequest: the model is resident.
            Conflict: it has requests in flight (it is not put to sleep under them).
        """
        entry = self._entry(model_id)
        if not entry.on_demand:
            raise BadRequest(f"model {model_id!r} is resident: it stays awake", param="model", code="model_resident")
        while (running := self._moves.running(entry)) is not None:
            await asyncio.shield(running)
        if entry.in_flight:
            raise Conflict(f"model {model_id!r} has {entry.in_flight} requests in flight; it sleeps once they finish",
                           code="model_busy")
        if entry.state == "asleep":
            return {**entry.view(), "result": None}
        result = await self._moves.run(entry, self._moves.sleep(entry))
        return {**entry.view(), "result": result}

    async def engine_found_asleep(self, model_id: str) -> None:
        """A request met ``model_id``'s replica without a running engine (a replica that
        Serve replaced starts asleep): take the engine's word, so the next lease wakes it."""
        entry = self._entry(model_id)
        if entry.on_demand and self._moves.running(entry) is None and entry.state == "awake":
            logger.warning("%s was found asleep while the ledger had it awake (its replica was replaced?)",
                           model_id)
            self._moves.set_state(entry, "asleep")

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

    async def _ensure_awake(self, entry: Entry, min_awake_s: Optional[float] = None) -> None:
        """Wait for ``entry`` to be awake: one wake serves every waiter. A failed wake
        fails its waiters; the next request tries again. When the memory it needs is
        held by models that are busy or woke less than ``min_awake_s`` ago, it waits its
        turn, counted as waiting (which makes them yield: deployments/residency/turns.py)."""
        min_awake_s = self._spec.min_awake_s if min_awake_s is None else min_awake_s
        with contextlib.ExitStack() as counted:
            is_counted = False
            while True:
                running = self._moves.running(entry)
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
            running = self._moves.running(entry)
            if running is not None or entry.state == "awake":
                return running
            try:
                victims = self._ledger.evictions_for(entry, now=time.monotonic(), min_awake_s=min_awake_s)
            except CannotFit as refusal:
                if not refusal.later:
                    raise
                return None
            for victim in victims:
                self._moves.start(victim, self._moves.sleep(victim))
            return self._moves.start(entry, self._moves.wake(entry, victims))

    async def _idle_loop(self) -> None:
        await self._moves.reconcile()
        measured_at = 0.0
        while True:
            await asyncio.sleep(self._spec.idle_check_s)
            for entry in self._ledger.idle(time.monotonic()):
                if self._moves.running(entry) is None:
                    logger.info("%s idle for %.0f s: putting it to sleep", entry.model_id, entry.idle_sleep_s)
                    self._moves.start(entry, self._moves.sleep(entry)).add_done_callback(_log_failure)
            if time.monotonic() - measured_at >= MEASURE_EVERY_S:
                measured_at = time.monotonic()
                await self._moves.measure_awake()
                for entry in self._ledger.entries.values():
                    self._moves.publish(entry)  # gauges set once (at start) are not always exported


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("idle sleep failed: %r", task.exception())
