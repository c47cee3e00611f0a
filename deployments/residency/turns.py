"""Turns between on-demand models that cannot both be awake.

Without turns, requests alternating between two such models (a reasoner and a heavy
model on one GPU) would make the residency manager swap on every request, or refuse
every request that finds the other model busy. With turns:

* a model woken for requests stays awake at least ``residency.min_awake_s``;
* while another model's requests wait for the memory it holds, a model past that time
  takes no new requests (:meth:`Turns.yields`): its requests in flight finish, it is put
  to sleep, and the waiting requests are all served by one wake;
* then the same rule gives the turn back.

Waiters look again whenever a lease, a state or a wait changes (:meth:`Turns.notify`),
and at least every :data:`TURN_POLL_S` (``min_awake_s`` runs out by time alone).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from deployments.residency.ledger import Entry, Ledger
from serve.kernel.errors import ModelUnavailable

#: How often a request waiting its turn looks again when nothing has told it to.
TURN_POLL_S = 0.5


class Turns:
    """Who waits, who yields, and the signal that something changed.

    Args:
        ledger: The residency ledger (its entries and budget).
        min_awake_s: How long a woken model keeps its turn.
    """

    def __init__(self, ledger: Ledger, min_awake_s: float) -> None:
        self._ledger = ledger
        self.min_awake_s = min_awake_s
        self._changed = asyncio.Event()  # set (and replaced) at every change

    def notify(self) -> None:
        """Wake every waiter to look again (a lease, a state or a wait changed)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changes(self) -> None:
        """Until something changes, or :data:`TURN_POLL_S` passes."""
        try:
            await asyncio.wait_for(self._changed.wait(), TURN_POLL_S)
        except asyncio.TimeoutError:
            pass

    @contextmanager
    def waiting(self, entry: Entry) -> Iterator[None]:
        """Count a request as waiting for ``entry`` (what makes other models yield)."""
        entry.waiting += 1
        self.notify()
        try:
            yield
        finally:
            entry.waiting -= 1
            self.notify()

    def yields(self, entry: Entry) -> bool:
        """Whether ``entry``, awake for its ``min_awake_s``, now takes no new requests
        because another model's requests wait for the memory it holds."""
        if not entry.on_demand or entry.state != "awake":
            return False
        if time.monotonic() - entry.awake_since < self.min_awake_s:
            return False
        return any(other is not entry and other.node_group == entry.node_group and other.on_demand and other.waiting
                   and not other.holds_memory and self._ledger.short_gib(other) > 1e-9
                   for other in self._ledger.entries.values())

    async def wait_for_turn(self, entry: Entry, deadline: float, late: Callable[[], ModelUnavailable]) -> None:
        """Hold a request for a model that yields, without a lease (so the model drains).

        Raises:
            ModelUnavailable: ``late()``, when ``deadline`` (monotonic) passes first.
        """
        with self.waiting(entry):
            while self.yields(entry):
                if time.monotonic() >= deadline:
                    raise late()
                await self.changes()
