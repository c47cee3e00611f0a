"""``/v1/models`` and the operator's ``/v1/models/{id}/sleep`` and ``/wake``.

The cards are built once from the profile (``serve/model_cards.py``); each LLM's
``metadata.state`` is read live from the residency manager when the profile has
on-demand models (with the health loop's last picture as the fallback when the manager
does not answer in time). Sleep and wake are for an operator who wants a model warm
before a batch, or its memory back now; like every route, they need an API key when the
graph has keys. Readiness (``/readyz``) is the same picture seen from the other side:
which deployments answer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from serve.kernel.config import Profile
from serve.kernel.errors import BadRequest, NotFound, raise_if_error, within
from serve.kernel.health import HealthCache
from serve.kernel.ray_private import ModelCard, ModelList
from serve.kernel.residency_client import HANDLE_SLACK_S


class ModelsService:
    """The graph's models as cards, their live state, sleep and wake, and readiness.

    Args:
        profile: The profile the graph was built from.
        cards: The model cards, built once from the profile (``serve/model_cards.py``).
        health: The replica's health cache (deployment health, the last model states).
        monitor: The GpuMonitor deployment's handle (readiness shows the GPU).
        node_monitors: Each GPU node group's GpuMonitor, by group (readiness shows each).
        residency: The residency manager's handle (None when every model is resident).
        timeout_s: Longest wait for the manager's states and the monitor's snapshot.
    """

    def __init__(self, profile: Profile, cards: dict[str, ModelCard], health: HealthCache, monitor: Any,
                 residency: Optional[Any], *, timeout_s: float, node_monitors: Optional[dict[str, Any]] = None) -> None:
        self._profile = profile
        self._cards = cards
        self._health = health
        self._monitor = monitor
        self._node_monitors = dict(node_monitors or {})
        self._residency = residency
        self._timeout_s = timeout_s

    async def list(self) -> ModelList:
        return ModelList(data=list((await self._live_cards()).values()))

    async def get(self, model: str) -> ModelCard:
        cards = await self._live_cards()
        if model not in cards:
            raise NotFound(f"model {model!r} does not exist; GET /v1/models lists the models", param="model",
                           code="model_not_found")
        return cards[model]

    async def sleep(self, model: str) -> dict[str, Any]:
        """Put an on-demand model to sleep now; what its engine held before and after."""
        self._check_on_demand(model)
        return raise_if_error(await within(self._residency.sleep.remote(model), self._operator_timeout_s,
                                           "the residency manager"))

    async def wake(self, model: str) -> dict[str, Any]:
        """Wake an on-demand model now (evicting idle ones if the budget needs it)."""
        self._check_on_demand(model)
        return raise_if_error(await within(self._residency.wake.remote(model), self._operator_timeout_s,
                                           "the residency manager"))

    @property
    def _operator_timeout_s(self) -> float:
        return self._profile.residency.wake_timeout_s + HANDLE_SLACK_S

    def _check_on_demand(self, model: str) -> None:
        specs = {spec.model_id: spec for spec in self._profile.models}
        if model not in specs:
            raise NotFound(f"model {model!r} is not an LLM of this graph; GET /v1/models lists the models",
                           param="model", code="model_not_found")
        if not specs[model].on_demand:
            raise BadRequest(f"model {model!r} is resident: it is always awake", param="model", code="model_resident")

    async def _live_cards(self) -> dict[str, ModelCard]:
        if self._residency is None:
            return self._cards
        try:
            rows = await within(self._residency.states.remote(), self._timeout_s, "the residency manager")
            states = {row["model"]: row for row in rows}
        except Exception:  # noqa: BLE001 - the last picture the health loop saw will do
            states = {model: {"state": state} for model, state in self._health.model_states.items()}
        cards = {}
        for model_id, card in self._cards.items():
            live = states.get(model_id)
            if live is not None:
                extra = {key: live[key] for key in ("state", "memory_gib", "measured", "in_flight", "waiting", "wakes") if key in live}
                card = card.model_copy(update={"metadata": {**card.metadata, **extra}})
            cards[model_id] = card
        return cards

    async def _gpu_snapshot(self, monitor: Any) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(monitor.snapshot.remote(), self._timeout_s)
        except Exception:  # noqa: BLE001 - the GPU picture is informative only
            return {"available": None}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every deployment answered its last health check, and the picture."""
        self._health.watch()
        if "unknown" in self._health.statuses().values():
            await self._health.refresh()  # the first call, before the loop has run
        deployments = self._health.statuses()
        gpu = await self._gpu_snapshot(self._monitor)
        if self._node_monitors:
            groups = list(self._node_monitors)
            snapshots = await asyncio.gather(*(self._gpu_snapshot(self._node_monitors[g]) for g in groups))
            gpu["node_groups"] = dict(zip(groups, snapshots))
        ready = all(status == "ok" for status in deployments.values())
        return ready, {"status": "ready" if ready else "not_ready", "profile": self._profile.name,
                       "deployments": deployments, "gpu": gpu}
