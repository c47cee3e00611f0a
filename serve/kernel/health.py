"""One picture of the graph's health per ingress replica, fed by one loop.

The dispatcher must not wait on a deployment that is down (a Serve handle would queue
the request until it comes back), admission needs the GPU's thermal level on every
request, and ``/readyz`` needs both. Asking the deployments per request would put a
hop in front of every request, so one background loop asks them every second and
everyone reads what it last saw: each deployment's health check, and the monitor's
admission state. A stalled answer counts as "down" for a deployment and leaves the last
known thermal state in force. The Extraction replicas dispatch too; they get the
ingress's picture with each document instead of probing the graph themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Optional, TypeVar

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

#: How often the loop asks every deployment.
POLL_INTERVAL_S = 1.0
#: How long one health check may take before it counts as a failure (default).
PROBE_TIMEOUT_S = 2.0
#: Thermal levels, coolest first: admission follows the hottest node.
_LEVEL_ORDER = {"normal": 0, "soft": 1, "hard": 2}


@dataclass(frozen=True)
class HealthSnapshot:
    """What a health picture holds at one moment (it crosses handles with a request)."""

    healthy: dict[str, Optional[bool]]
    thermal: dict[str, Any]
    model_states: dict[str, str] = field(default_factory=dict)
    """The residency state of each LLM (``awake``, ``asleep``...), by model id."""
    without_replicas: frozenset[str] = frozenset()
    """The deployments Serve runs no replica of now (see :meth:`HealthCache._count_replicas`)."""


class HealthPicture:
    """Last known health of each deployment and the last known thermal state: what the
    dispatcher reads. On its own it is fed by :meth:`update`, with the picture another
    replica's :class:`HealthCache` sent along with a request, so a deployment that
    dispatches on the ingress's behalf (Extraction) runs no probe loop of its own.

    Args:
        names: The deployments it tracks.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._healthy: dict[str, Optional[bool]] = {name: None for name in names}
        self.thermal: dict[str, Any] = {"level": "normal", "temperature_c": None}
        self.thermal_by_node: dict[Optional[str], dict[str, Any]] = {}
        self.model_states: dict[str, str] = {}
        self.without_replicas: frozenset[str] = frozenset()

    def watch(self) -> None:
        """Nothing to start: the picture arrives with requests."""

    def has_no_replica(self, name: str) -> bool:
        """Whether Serve runs no replica of ``name`` now (its node is gone, or it is being
        replaced): not merely slow to answer its health check, as a busy one is."""
        return name in self.without_replicas

    def healthy(self, name: str) -> bool:
        """Whether ``name`` answered its last check (true until a check says otherwise)."""
        return self._healthy.get(name) is not False

    def model_state(self, model_id: str) -> str:
        """The residency state last seen for ``model_id`` (``awake`` when never reported:
        resident models are awake, and a profile without on-demand models reports none)."""
        return self.model_states.get(model_id, "awake")

    def awake(self, model_id: str) -> bool:
        return self.model_state(model_id) == "awake"

    def statuses(self) -> dict[str, str]:
        """``ok``, ``down`` or ``unknown`` (not checked yet) for every deployment."""
        return {name: {True: "ok", False: "down", None: "unknown"}[value] for name, value in self._healthy.items()}

    def snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(dict(self._healthy), dict(self.thermal), dict(self.model_states), self.without_replicas)

    def update(self, snapshot: Optional[HealthSnapshot]) -> None:
        """Take a newer picture (the latest wins: every sender sees the same graph)."""
        if snapshot is not None:
            self._healthy.update({name: value for name, value in snapshot.healthy.items() if name in self._healthy})
            self.thermal = dict(snapshot.thermal)
            self.model_states = dict(snapshot.model_states)
            self.without_replicas = snapshot.without_replicas


#: Deployments whose readiness is more than being alive: they answer ``readiness`` only
#: while their store (a PostgreSQL server) answers too. Serve's own health check stays
#: ``check_health``, so a database outage never makes Serve replace their replicas.
READINESS_PROBES = {"collections": "readiness", "batches": "readiness"}


class HealthCache(HealthPicture):
    """The picture fed by one background loop that asks every deployment each second.

    Args:
        handles: Deployment handles by name (each answers ``check_health``).
        monitor: The GPU monitor's handle (answers ``admission``), or None.
        node_monitors: The monitors of the node groups with a GPU, by group: admission
            follows the hottest GPU among them and ``monitor``.
        probe_timeout_s: How long one answer may take before it counts as a failure.
        ready_message: Logged once, the first time every deployment answers.
        residency: The residency manager's handle (answers ``states``), or None.
    """

    def __init__(self, handles: dict[str, Any], monitor: Any = None, *, probe_timeout_s: float = PROBE_TIMEOUT_S,
                 ready_message: Optional[str] = None, residency: Any = None,
                 node_monitors: Optional[dict[str, Any]] = None) -> None:
        super().__init__(handles)
        self._residency = residency
        self._handles = dict(handles)
        self._timeout_s = probe_timeout_s
        self._ready_message = ready_message
        self._monitors = {None: monitor} if monitor is not None else {}
        self._monitors.update(node_monitors or {})
        self._task: Optional[asyncio.Task] = None

    def watch(self) -> None:
        """Start the loop on the running event loop (once; the first request does it)."""
        if self._task is None:
            # A fresh context: the loop must not carry the first request's id in its logs.
            self._task = asyncio.get_running_loop().create_task(self._loop(), context=contextvars.Context())

    async def refresh(self) -> None:
        """Ask every deployment (concurrently) and the monitor once."""
        names = list(self._handles)
        results = await asyncio.gather(*(self._probe(self._handles[n], self._timeout_s, READINESS_PROBES.get(n, "check_health"))
                                         for n in names))
        for name, healthy in zip(names, results):
            if healthy != self._healthy[name] and self._healthy[name] is not None:
                logger.warning("deployment %s is now %s", name, "healthy" if healthy else "unavailable")
            self._healthy[name] = healthy
        if self._ready_message and all(self._healthy.values()):
            logger.info("%s", self._ready_message)
            self._ready_message = None
        await self._count_replicas()
        if self._monitors:
            await self._refresh_thermal()
        if self._residency is not None:
            try:
                states = await asyncio.wait_for(self._residency.states.remote(), self._timeout_s)
                self.model_states = {row["model"]: row["state"] for row in states}
            except Exception as exc:  # noqa: BLE001 - keep the last known states
                logger.warning("model residency unavailable: %r", exc)

    async def _count_replicas(self) -> None:
        """While a deployment does not answer its check, ask Serve whether it runs any
        replica of it at all. A deployment that answers late is busy (a full queue refuses
        the probe too) and will serve what waits for it; one with no replica running (its
        node is gone) will not, and the dispatcher stops waiting for it. Serve is asked
        only while something is down: its answer describes every replica of the cluster."""
        down = {name for name, healthy in self._healthy.items() if healthy is False}
        if not down:
            self.without_replicas = frozenset()
            return
        try:
            running = await asyncio.wait_for(asyncio.to_thread(running_replicas), self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - keep the last answer
            logger.warning("Serve's replica counts unavailable: %r", exc)
            return
        deployments = {name: getattr(self._handles[name], "deployment_name", None) for name in down}
        self.without_replicas = frozenset(name for name, deployment in deployments.items()
                                          if deployment is not None and running.get(deployment) == 0)

    async def _refresh_thermal(self) -> None:
        """Ask every node's monitor; admission follows the hottest GPU of the graph (a node
        whose monitor does not answer keeps its last known level)."""
        groups = list(self._monitors)
        answers = await asyncio.gather(*(asyncio.wait_for(self._monitors[g].admission.remote(), self._timeout_s)
                                         for g in groups), return_exceptions=True)
        for group, answer in zip(groups, answers):
            if isinstance(answer, BaseException):
                logger.warning("thermal state of %s unavailable: %r", f"node group {group}" if group else "the GPU", answer)
            else:
                self.thermal_by_node[group] = answer
        if self.thermal_by_node:
            self.thermal = max(self.thermal_by_node.values(),
                               key=lambda t: (_LEVEL_ORDER.get(t.get("level"), 0), t.get("temperature_c") or 0.0))

    @staticmethod
    async def _probe(handle: Any, timeout_s: float, method: str = "check_health") -> bool:
        try:
            await asyncio.wait_for(getattr(handle, method).remote(), timeout_s)
            return True
        except Exception:  # noqa: BLE001 - any failure or timeout means "down"
            return False

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(POLL_INTERVAL_S)


#: How often a request waiting on a model with no replica looks at the health picture.
DOWN_POLL_S = 0.5


def running_replicas() -> dict[str, int]:
    """Serve's count of RUNNING replicas of every deployment, by deployment name (blocking;
    empty outside a Ray worker, where asking would start a Ray of its own)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return {}
    status = serve.status()
    return {name: sum(count for state, count in deployment.replica_states.items()
                      if getattr(state, "value", state) == "RUNNING")
            for app in status.applications.values() for name, deployment in app.deployments.items()}


async def without_replica_for(picture: HealthPicture, name: str, wait_s: float) -> None:
    """Return once ``picture`` has shown no replica of ``name`` for ``wait_s`` without a break."""
    since: Optional[float] = None
    while True:
        now = time.monotonic()
        if not picture.has_no_replica(name):
            since = None
        elif since is None:
            since = now
        elif now - since >= wait_s:
            return
        await asyncio.sleep(DOWN_POLL_S)


async def unless_down(picture: HealthPicture, name: str, wait_s: float, call: Awaitable[T],
                      still_down: Callable[[], Exception]) -> T:
    """Await ``call`` unless Serve has run no replica of ``name`` for ``wait_s`` first;
    then cancel it and raise ``still_down()``.

    A Serve handle holds a request until a replica takes it: a few seconds while Serve
    replaces a dead replica (worth waiting for), forever while the deployment's node is
    gone. A deployment that has a replica is never given up on, however busy (its health
    check may time out under a full queue) or however long its answer takes.
    """
    task = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(without_replica_for(picture, name, wait_s))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done() and not watch.done():  # we were cancelled ourselves
            task.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise still_down()
