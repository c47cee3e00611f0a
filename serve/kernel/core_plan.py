"""CPU core plan: which cores each CPU engine computes on, as the GPU planner plans memory.

vLLM's CPU engine binds one OpenMP thread to each core of ``VLLM_CPU_OMP_THREADS_BIND``.
Left at ``auto`` it keeps a core for its scheduler and binds to what is left of the
cores the process may use; under Ray, with fractional ``num_cpus``, every engine ended
up with one thread on core 0 (DESIGN.md, "Facts measured"). So CPU profiles name the
cores of each engine (``cpu_cores``), the graph passes them to the engine (its threads
and its scheduler: :mod:`deployments.llm.engine_cores`), and this plan checks them
against the machine and says which engines share cores.

The cores no engine computes on are the control plane's: Ray's daemons, the replicas,
the HTTP proxy. They wake hundreds of times a second even when idle; on an engine's core
each wake-up preempts a thread the whole token waits for. ``rest`` (every core but the
first) is how the CPU profiles leave them one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from serve.kernel.cpu_affinity import keep_ray_daemons_to_once, node_cores, pin_to_cores

#: The cores the graph's own replicas keep to (set in their runtime environment; read as
#: ``Settings.control_cores``), and whether the first of them on a node moves Ray's daemons.
CONTROL_CORES_ENV = "LLMGRAPH_CONTROL_CORES"
MOVE_RAY_DAEMONS_ENV = "LLMGRAPH_MOVE_RAY_DAEMONS"


def parse_cores(text: str) -> tuple[int, ...]:
    """``"0-2,5"`` -> ``(0, 1, 2, 5)``; ``"all"`` -> every core this node gives the graph
    (:func:`serve.kernel.cpu_affinity.node_cores`);
    ``"rest"`` -> all of them but the first, which is left to the control plane (all of
    them on a one-core machine). The profile's pattern has already checked the syntax.

    Raises:
        ValueError: a range that runs backwards.
    """
    if text in ("all", "rest"):
        allowed = node_cores()
        return allowed[1:] if text == "rest" and len(allowed) > 1 else allowed
    cores: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"core range {part!r} runs backwards")
        cores.extend(range(low, high + 1))
    return tuple(sorted(set(cores)))


@dataclass(frozen=True)
class CoreRow:
    engine: str
    model: str
    cores: Optional[tuple[int, ...]]  # None: vLLM's auto binding


@dataclass(frozen=True)
class CorePlan:
    """The engines' cores on a machine where this process may use the ``allowed`` cores."""

    profile: str
    allowed: tuple[int, ...]
    rows: tuple[CoreRow, ...]

    def shared(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Pairs of engines that compute on some of the same cores, and those cores."""
        out = []
        for i, a in enumerate(self.rows):
            for b in self.rows[i + 1:]:
                common = tuple(sorted(set(a.cores or ()) & set(b.cores or ())))
                if common:
                    out.append((a.engine, b.engine, common))
        return out

    def control(self) -> tuple[int, ...]:
        """The allowed cores no engine computes on: Ray's, the replicas', the proxy's."""
        engines = {core for row in self.rows for core in (row.cores or ())}
        return tuple(core for core in self.allowed if core not in engines)

    def problems(self) -> list[str]:
        """Cores a profile names that this machine does not let the graph use."""
        return [
            f"{row.engine} ({row.model}) is bound to cores {list(row.cores)}, but this machine allows "
            f"{list(self.allowed)}"
            for row in self.rows
            if row.cores and not set(row.cores) <= set(self.allowed)
        ]

    def table(self) -> str:
        lines = [f"CPU core plan for profile {self.profile!r} (cores allowed here: {list(self.allowed)})",
                 f"{'engine':<10} {'model':<32} {'cores':<14} threads"]
        for row in self.rows:
            cores = ",".join(map(str, row.cores)) if row.cores else "auto"
            threads = str(len(row.cores)) if row.cores else "vLLM's choice"
            lines.append(f"{row.engine:<10} {row.model[:32]:<32} {cores:<14} {threads}")
        for a, b, common in self.shared():
            lines.append(f"note: {a} and {b} share cores {list(common)}: while both compute, each runs at about "
                         "half speed; while one is idle the other has them all")
        if all(row.cores for row in self.rows):
            control = self.control()
            lines.append(f"control plane (Ray, replicas, HTTP proxy): cores {list(control)}" if control else
                         "note: every core computes for an engine, so Ray, the replicas and the HTTP proxy preempt "
                         "engine threads, and each token waits for them; leave them a core (cpu_cores: rest)")
        problems = self.problems()
        lines.append("verdict: " + ("fits" if not problems else "DOES NOT FIT"))
        lines.extend(f"  - {p}" for p in problems)
        return "\n".join(lines)


def build_core_plan(profile, allowed: Optional[tuple[int, ...]] = None) -> CorePlan:
    """The core plan of a CPU profile on this machine (or one that allows ``allowed``)."""
    rows = tuple(
        CoreRow(spec.role, spec.model_id, parse_cores(spec.cpu_cores) if spec.cpu_cores else None)
        for spec in profile.models
    )
    return CorePlan(profile.name, tuple(sorted(allowed)) if allowed is not None else node_cores(), rows)


def control_plane_env(profile) -> dict[str, str]:
    """The environment that keeps the graph's own replicas off the engines' cores: on a
    CPU profile whose engines all name their cores and leave some free; else nothing."""
    if profile.device != "cpu":
        return {}
    plan = build_core_plan(profile)
    control = plan.control()
    if not control or not all(row.cores for row in plan.rows):
        return {}
    env = {CONTROL_CORES_ENV: ",".join(map(str, control))}
    if profile.moves_ray_daemons:
        env[MOVE_RAY_DAEMONS_ENV] = "1"
    return env


def keep_to_control_plane() -> None:
    """Called first in each of the graph's replicas (not the Embedder, which computes):
    keep this process to the control plane's cores, so that its request handling and
    background loops never preempt an engine's thread. The kernel would mostly place it
    there anyway, but not when the control plane's cores are busy, and on 2 cores that
    is whenever the engine streams to 8 clients. Engines a replica starts are pinned back
    to their own cores by :mod:`deployments.llm.engine_cores`.

    When the profile moves Ray's daemons (``move_ray_daemons``, on for CPU profiles), the
    first replica on each node also moves Ray's own processes there (the raylet, the GCS,
    the dashboard, Serve's controller and HTTP proxy:
    :func:`serve.kernel.cpu_affinity.keep_ray_daemons_to_once`), which would otherwise wake
    on the engines' cores; so a plain ``serve run`` and a KubeRay pod get the whole plan,
    with no wrapper around the command."""
    from serve.kernel.settings import load_settings

    settings = load_settings()
    control = pin_to_cores(settings.control_cores)
    if control and settings.move_ray_daemons:
        keep_ray_daemons_to_once(control)
