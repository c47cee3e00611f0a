"""Residency plan: which LLMs are always awake, which are woken on demand, and do they fit?

A profile may list more models than its memory holds at once. Resident models are awake
for the graph's life; on-demand models take turns in what is left. The plan holds when
every on-demand model fits beside the resident ones once the other on-demand models
sleep (those are its eviction candidates). The memory is GPU memory on GPU profiles (each
model's vLLM share, ``resources.num_gpus`` of the card) and host memory on CPU profiles
(``host_memory_gib``). Models that sleep at ``level1`` park their weights in host RAM,
so on GPU profiles the plan also checks that the worker's host memory holds them all.

On a cluster each node group (``cluster.node_groups``) is planned on its own: the models
placed on a group share one node's budget, and models without a group share the
profile's. :func:`build_residency_plans` gives one plan per group.

Profile validation refuses a plan that cannot hold, with :meth:`ResidencyPlan.table` in
the message, naming each model and its shortfall. ``python -m serve plan <profile>``
prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from serve.kernel.planner import GIB, load_facts


@dataclass(frozen=True)
class ResidencyRow:
    """One LLM's line: its residency, how it sleeps and the memory it holds awake."""

    role: str
    model: str
    residency: str
    mechanism: str
    awake_gib: float
    parked_host_gib: float = 0.0
    """Host memory its weights take while asleep (``level1`` only)."""


@dataclass(frozen=True)
class ResidencyPlan:
    """The residency plan of one profile."""

    profile: str
    memory: str  # "GPU" or "host"
    budget_gib: Optional[float]
    rows: tuple[ResidencyRow, ...]
    host_gib: Optional[float] = None
    """Host memory that level1 sleepers park weights in (GPU profiles)."""
    node_group: Optional[str] = None
    """The node group planned (None: the models without one)."""

    @property
    def resident_gib(self) -> float:
        return sum(r.awake_gib for r in self.rows if r.residency == "resident")

    def room_for(self, row: ResidencyRow) -> Optional[float]:
        """Memory left once ``row`` wakes beside the resident models (None: no budget)."""
        if self.budget_gib is None:
            return None
        return self.budget_gib - self.resident_gib - (row.awake_gib if row.residency == "on_demand" else 0.0)

    @property
    def max_awake(self) -> Optional[int]:
        """How many models the budget holds awake at most (smallest on-demand models first)."""
        if self.budget_gib is None:
            return None
        awake, left = 0, self.budget_gib - self.resident_gib
        for size in sorted(r.awake_gib for r in self.rows if r.residency == "on_demand"):
            if size > left + 1e-9:
                break
            awake, left = awake + 1, left - size
        return awake + sum(1 for r in self.rows if r.residency == "resident")

    def problems(self) -> list[str]:
        """Why the plan cannot hold (empty when it can)."""
        out = []
        if self.budget_gib is not None and self.resident_gib > self.budget_gib + 1e-9:
            out.append(f"the resident models need {self.resident_gib:.2f} GiB of {self.memory} memory, more than "
                       f"the budget of {self.budget_gib:.2f} GiB: short by {self.resident_gib - self.budget_gib:.2f} GiB")
        for row in self.rows:
            room = self.room_for(row)
            if row.residency == "on_demand" and room is not None and room < -1e-9:
                out.append(f"{row.model} ({row.role}) needs {row.awake_gib:.2f} GiB awake, but with every other "
                           f"on-demand model asleep the budget leaves {row.awake_gib + room:.2f} GiB beside the "
                           f"resident models: short by {-room:.2f} GiB")
        parked = sum(r.parked_host_gib for r in self.rows)
        if self.host_gib is not None and parked > self.host_gib:
            out.append(f"level1 sleepers park {parked:.2f} GiB of weights in host memory, more than the worker's "
                       f"{self.host_gib:.0f} GiB: short by {parked - self.host_gib:.2f} GiB (use level2 or stop)")
        return out

    def table(self) -> str:
        budget = f"{self.budget_gib:.2f} GiB" if self.budget_gib is not None else "no limit"
        header = f"{'role':<10} {'model':<30} {'residency':<10} {'sleeps by':<9} {'awake':>8} {'room when awake':>16}"
        where = f", node group {self.node_group!r}" if self.node_group else ""
        lines = [f"Residency plan for profile {self.profile!r}{where} ({self.memory} memory budget for the LLMs: {budget})",
                 header, "-" * len(header)]
        for row in self.rows:
            room = self.room_for(row)
            room_text = "-" if room is None else f"{room:.2f}G"
            sleeps = row.mechanism if row.residency == "on_demand" else "-"
            awake = f"{row.awake_gib:.2f}G" if row.awake_gib else "-"  # a CPU model with no host_memory_gib
            lines.append(f"{row.role:<10} {row.model[:30]:<30} {row.residency:<10} {sleeps:<9} {awake:>8} {room_text:>16}")
        lines.append("-" * len(header))
        awake = self.max_awake
        lines.append(f"awake at once: at most {awake if awake is not None else len(self.rows)} of {len(self.rows)}")
        problems = self.problems()
        lines.append("verdict: " + ("fits" if not problems else "DOES NOT FIT"))
        lines.extend(f"  - {p}" for p in problems)
        return "\n".join(lines)


def build_residency_plan(profile, node_group: Optional[str] = None) -> ResidencyPlan:
    """The residency plan of a ``serve.kernel.config.Profile``'s models on ``node_group``
    (None: the models without a node group, which is every model of a one-machine profile)."""
    gpu = profile.device == "gpu"
    group = profile.cluster.node_groups.get(node_group) if node_group else None
    card_gib = (group.gpu_memory_gib if group is not None else None) or profile.gpu_memory_gib
    rows = []
    for spec in profile.models:
        if spec.resources.node_group != node_group:
            continue
        mechanism = spec.mechanism(profile.device)
        if gpu:
            awake = spec.resources.num_gpus * card_gib
            parked = 0.0
            if spec.on_demand and mechanism == "level1" and spec.model_facts:
                parked = load_facts(spec.model_facts).weight_bytes / GIB
        else:
            awake, parked = spec.host_memory_gib or 0.0, 0.0
        rows.append(ResidencyRow(spec.role, spec.model_id, spec.residency, mechanism, round(awake, 3), parked))
    host_gib = (group.memory_gib if group is not None else profile.cluster.worker_memory_gib) if gpu else None
    return ResidencyPlan(
        profile=profile.name, memory="GPU" if gpu else "host", budget_gib=llm_budget_gib(profile, node_group),
        rows=tuple(rows), host_gib=float(host_gib) if host_gib is not None else None, node_group=node_group,
    )


def build_residency_plans(profile) -> list[ResidencyPlan]:
    """One plan per node group that holds a model (the models without one first)."""
    groups = list(dict.fromkeys(spec.resources.node_group for spec in profile.models))
    return [build_residency_plan(profile, group) for group in sorted(groups, key=lambda g: (g is not None, g or ""))]


def llm_budget_gib(profile, node_group: Optional[str] = None) -> Optional[float]:
    """Memory the LLM engines (of ``node_group``) may hold at once on one node (see
    ``ResidencySpec.budget_gib`` and ``NodeGroupSpec.llm_budget_gib``)."""
    group = profile.cluster.node_groups.get(node_group) if node_group else None
    if group is not None and group.llm_budget_gib is not None:
        return group.llm_budget_gib
    if group is None and profile.residency.budget_gib is not None:
        return profile.residency.budget_gib
    if profile.device != "gpu" or (group is not None and not group.gpus):
        return None
    card_gib = (group.gpu_memory_gib if group is not None else None) or profile.gpu_memory_gib
    embedder = profile.embedder.resources
    beside = embedder.num_gpus * card_gib if embedder.node_group == node_group else 0.0
    return card_gib - profile.gpu_headroom_gib - beside
