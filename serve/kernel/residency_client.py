"""The dispatcher's side of the residency manager: leases on on-demand models.

A request for an on-demand model takes a lease before it is forwarded (which wakes the
model when it sleeps, and keeps it awake) and gives it back after its last byte. Only
on-demand models pay this hop; resident ones never call the manager.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serve.kernel.config import ResidencySpec
from serve.kernel.errors import Unavailable, raise_if_error, within

logger = logging.getLogger("ray.serve")

#: Time the handle call may take beyond the manager's own wake timeout (queueing, the hop).
HANDLE_SLACK_S = 10.0


class Leases:
    """Acquire and release leases through the manager's handle.

    Args:
        handle: The Residency deployment's handle.
        spec: The profile's residency block (wake timeout, Retry-After).
    """

    def __init__(self, handle: Any, spec: ResidencySpec) -> None:
        self._handle = handle
        self._spec = spec
        self._timeout_s = spec.wake_timeout_s + HANDLE_SLACK_S
        self._pending: set[asyncio.Task] = set()

    async def acquire(self, model_id: str) -> float:
        """A lease on ``model_id``; how long the model took to wake for it (ms).

        Raises:
            Unavailable: the model could not be woken in time, or cannot fit now.
        """
        try:
            return raise_if_error(await within(self._handle.acquire.remote(model_id), self._timeout_s,
                                               "the residency manager"))
        except Unavailable as exc:
            exc.headers.setdefault("Retry-After", str(self._spec.retry_after_s))
            raise

    async def found_asleep(self, model_id: str) -> None:
        """Tell the manager a request met ``model_id`` without a running engine."""
        await within(self._handle.engine_found_asleep.remote(model_id), self._timeout_s, "the residency manager")

    def release(self, model_id: str) -> None:
        """Give the lease back, without holding up the answer (which has already gone).

        The call is awaited in a task of its own: a lost release would keep the model
        from ever sleeping, so a failure is logged.
        """
        task = asyncio.get_running_loop().create_task(self._release(model_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release(self, model_id: str) -> None:
        try:
            await within(self._handle.release.remote(model_id), self._timeout_s, "the residency manager")
        except Exception as exc:  # noqa: BLE001 - logged; the next request's lease is unaffected
            logger.warning("releasing the lease on %s failed: %r", model_id, exc)
