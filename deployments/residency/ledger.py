"""The residency ledger: which LLM is awake, what it holds, and who must sleep for whom.

Pure bookkeeping, no handles and no awaits, so the rules are unit-tested on their own
(``tests/unit/test_residency_ledger.py``) and the manager deployment only carries them
out. The memory of an awake model is the figure measured when it last woke (the engine
processes' resident memory on CPU, their GPU memory by NVML on a GPU) and the plan's
figure until then. A model that is waking or going to sleep still counts: its memory is
not free until the transition is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from serve.kernel.errors import ModelUnavailable

#: The states a model is in (``/v1/models`` ``metadata.state``).
STATES = ("awake", "asleep", "waking", "sleeping")


@dataclass
class Entry:
    """One LLM in the ledger."""

    role: str
    model_id: str
    on_demand: bool
    mechanism: str
    planned_gib: float
    idle_sleep_s: Optional[float] = None
    state: str = "awake"
    measured_gib: Optional[float] = None
    in_flight: int = 0
    last_used: float = 0.0
    wakes: int = 0
    awake_since: float = 0.0
    """When it last woke (monotonic): it stays awake ``residency.min_awake_s`` from then."""
    waiting: int = 0
    """Requests waiting for it to wake."""
    node_group: Optional[str] = None
    """The node group it runs on: its memory counts against that group's budget only."""

    @property
    def held_gib(self) -> float:
        """What the model holds while awake: measured once known, planned before."""
        return self.measured_gib if self.measured_gib is not None else self.planned_gib

    @property
    def holds_memory(self) -> bool:
        return self.state != "asleep"

    def view(self) -> dict:
        """What ``/v1/models`` and the operator endpoints show of it."""
        return {"role": self.role, "model": self.model_id, "residency": "on_demand" if self.on_demand else "resident",
                "state": self.state, "sleeps_by": self.mechanism if self.on_demand else None,
                "memory_gib": round(self.held_gib, 3), "measured": self.measured_gib is not None,
                "in_flight": self.in_flight, "waiting": self.waiting, "wakes": self.wakes,
                **({"node_group": self.node_group} if self.node_group else {})}


class CannotFit(ModelUnavailable):
    """A model cannot wake now: the budget is held by models with requests in flight, or
    woken too recently to be put to sleep (``later``: it will fit once they are done), or
    by resident models (it never will)."""

    later: bool = False


class Ledger:
    """The entries and the memory budgets they share: one per node (None: no limit).

    Models without a node group share ``budget_gib`` (the one machine, or whatever node
    Ray put them on); the models of a node group share that group's budget, and nothing
    on another node can make them sleep or be put to sleep for them.

    Args:
        entries: One per LLM; resident ones start awake, on-demand ones asleep.
        budget_gib: Memory the LLM engines without a node group may hold at once.
        retry_after_s: Retry-After of a refusal.
        group_budgets: The budget of each node group's node, by group name.
    """

    def __init__(self, entries: Iterable[Entry], budget_gib: Optional[float], retry_after_s: int,
                 group_budgets: Optional[dict[str, Optional[float]]] = None) -> None:
        self.entries = {entry.model_id: entry for entry in entries}
        self.budget_gib = budget_gib
        self.group_budgets = dict(group_budgets or {})
        self.retry_after_s = retry_after_s

    def budget_for(self, entry: Entry) -> Optional[float]:
        """The budget ``entry``'s memory counts against."""
        return self.group_budgets.get(entry.node_group) if entry.node_group else self.budget_gib

    def _neighbours(self, entry: Entry) -> list[Entry]:
        """The models that share ``entry``'s budget (itself included)."""
        return [e for e in self.entries.values() if e.node_group == entry.node_group]

    def held_gib(self, node_group: Optional[str] = None) -> float:
        """Memory held now by every model not asleep on ``node_group`` (None: the models without one)."""
        return sum(entry.held_gib for entry in self.entries.values()
                   if entry.holds_memory and entry.node_group == node_group)

    def short_gib(self, wanted: Entry) -> float:
        """How much memory ``wanted`` lacks to wake beside what is held now (<= 0: it fits)."""
        budget = self.budget_for(wanted)
        if budget is None:
            return 0.0
        return self.held_gib(wanted.node_group) + wanted.held_gib - budget

    def evictions_for(self, wanted: Entry, *, now: float = 0.0, min_awake_s: float = 0.0) -> list[Entry]:
        """The models that must sleep before ``wanted`` wakes, least recently used first.

        Only on-demand models that are awake, idle (no request in flight), awake for at
        least ``min_awake_s`` at ``now``, and not ``wanted`` itself may be evicted.

        Raises:
            CannotFit: even with every such model asleep there is not enough room; the
                message names the shortfall and the models that hold the rest, and
                ``later`` says whether it would fit once the busy and young ones are done.
        """
        budget = self.budget_for(wanted)
        if budget is None:
            return []
        short = self.short_gib(wanted)
        victims: list[Entry] = []
        neighbours = self._neighbours(wanted)
        candidates = sorted(
            (e for e in neighbours
             if e.on_demand and e.state == "awake" and e.in_flight == 0 and e is not wanted
             and now - e.awake_since >= min_awake_s),
            key=lambda e: e.last_used,
        )
        for candidate in candidates:
            if short <= 1e-9:
                break
            victims.append(candidate)
            short -= candidate.held_gib
        if short > 1e-9:
            holders = ", ".join(
                f"{e.model_id} ({e.state}, {e.in_flight} in flight, {e.held_gib:.2f} GiB)"
                for e in neighbours if e.holds_memory and e not in victims
            )
            where = f" of node group {wanted.node_group!r}" if wanted.node_group else ""
            refusal = CannotFit(
                f"model {wanted.model_id!r} needs {wanted.held_gib:.2f} GiB to wake, and the budget{where} of "
                f"{budget:.2f} GiB is short by {short:.2f} GiB even with every idle model asleep; "
                f"held by: {holders}. Retry when their requests finish.",
                code="model_cannot_fit", headers={"Retry-After": str(self.retry_after_s)},
            )
            on_demand = sum(e.held_gib for e in neighbours
                            if e.on_demand and e.holds_memory and e is not wanted and e not in victims)
            refusal.later = short - on_demand <= 1e-9
            raise refusal
        return victims

    def idle(self, now: float) -> list[Entry]:
        """On-demand models awake with no request for their ``idle_sleep_s``."""
        return [
            e for e in self.entries.values()
            if e.on_demand and e.state == "awake" and e.in_flight == 0 and e.idle_sleep_s is not None
            and now - e.last_used >= e.idle_sleep_s
        ]
